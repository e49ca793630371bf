"""Own the process tree: everything a simulation starts is stopped before it returns.

Ray's shutdown signals its processes but does not wait for them, and workers whose raylet
exits first are re-parented away from us. Making this process a child subreaper (Linux) keeps
every descendant ours, so it can be waited for, and killed if it lingers.
"""

import ctypes
import logging
import sys

import psutil

logger = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux only; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def stop_descendants(*, grace_seconds: float = 5.0) -> int:
    """Terminate this process's descendants, kill those still alive after the grace period.

    Returns the number of processes that had to be stopped.
    """
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace_seconds)
    for child in alive:
        logger.warning("killing process %d that outlived the simulation", child.pid)
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_seconds)
    return len(children)
