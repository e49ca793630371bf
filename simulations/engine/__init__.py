"""The simulation engine: simulated hospitals run federated, pooled or local-only."""
