"""The researcher's side: the fedcare command, the simulation engine, deployment and audit."""
