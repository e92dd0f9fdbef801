"""The harness: plays every party of a federation on one machine (simulation, study, yardstick, FedAvg arm).

It imports both sides; ``coordinator/`` and ``site_agent/`` import nothing of it, and it is left out of
the app package every site receives (``tests/test_import_rules.py`` checks both).
"""
