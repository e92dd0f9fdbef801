"""``coordinator study``: does pooling distilled sets pay, against what a coordinating team could do instead?

One partition of one dataset across N simulated sites, the same seeds for every arm
(``coordinator.study.plan``): pooled distilled sets (``coordinator simulate`` itself), FedAvg through
Flower's own strategy (``fedavg``), each site alone, a random real subset of the pooled set's size
(a reference: it ships real images) and centralised training (the ceiling) (``arms``). Bytes are
counted at the sites (``traffic``), and every arm's share digests are checked against each other
(``runner``). ``report`` writes the tables, plots and the subset/distilled correlation.
"""
