"""The local deployment launcher: a real SuperLink and SuperNodes on this machine."""
