"""The coordinating server's side: the ServerApp, the round loop, reports and admin commands."""
