"""Shared by server and hospitals: tasks, privacy math, secure-aggregation primitives, config."""
