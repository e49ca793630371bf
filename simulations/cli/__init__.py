"""The fedcare command: a thin composition root over each role's own commands."""
