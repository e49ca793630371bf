"""Studies (privacy sweeps); run from a source checkout, not installed."""
