"""The hospital's side: the ClientApp, local training, privacy and the hospital's commands."""
