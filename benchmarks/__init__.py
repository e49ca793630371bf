"""Measurements of fedcare (each prints its own figures); not part of the installed package."""
