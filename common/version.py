"""The installed fedcare version, which server and hospitals must share."""

from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version


@lru_cache(maxsize=1)  # read once per process: every message states it
def fedcare_version() -> str:
    """The installed distribution's version string (e.g. ``"0.1.0"``); ``"unknown"`` if absent."""
    try:
        return version("fedcare")
    except PackageNotFoundError:
        return "unknown"
