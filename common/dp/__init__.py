"""Differential-privacy math shared by hospitals and server: clipping, noise, events, accounting.

Everything here works on plain NumPy arrays and imports neither Flower nor Keras; only
``common.dp.accounting`` (and the ledger through it) imports Opacus, lazily, for its accountants.
"""
