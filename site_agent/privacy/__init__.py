"""What a site measures about a synthetic set before it may leave: near copies, memorisation, membership
inference and utility (``report``), and the policy gate that reads those numbers (``gate``)."""
