"""Drills (fault injection, console screenshots); run from a source checkout, not installed."""
