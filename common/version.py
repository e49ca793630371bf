"""The installed fedcare version, which server and hospitals must share."""

from importlib.metadata import PackageNotFoundError, version


def fedcare_version() -> str:
    """The installed distribution's version string (e.g. ``"0.1.0"``); ``"unknown"`` if absent."""
    try:
        return version("fedcare")
    except PackageNotFoundError:
        return "unknown"
