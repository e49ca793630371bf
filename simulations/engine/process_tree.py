"""Own the process tree: everything a simulation starts is stopped before it returns.

Ray's shutdown signals its processes but does not wait for them, and workers whose raylet
exits first are re-parented away from us. Making this process a child subreaper (Linux) keeps
every descendant ours, so it can be waited for, and killed if it lingers.

``exit_on_signals`` makes Ctrl-C (SIGINT) and SIGTERM end a command at once, this tree
included, saying what the interruption kept and lost.
"""

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil

from common.signals import handling_signals

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
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace_seconds)
    for child in alive:
        logger.warning("killing process %d that outlived the simulation", child.pid)
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=grace_seconds)
    return len(children)


@contextmanager
def exit_on_signals(explain: Callable[[], str]) -> Iterator[None]:
    """Within the block, SIGINT or SIGTERM ends the process at once, with exit status 130 / 143.

    It first silences this process's own output (file descriptors 1 and 2 to ``os.devnull``:
    what Ray forwards from dying workers, their tracebacks, and the "killing process" lines),
    stops every descendant and waits for them, and only then prints ``fedcare: interrupted by
    <signal>; <explain()>`` to the terminal's stderr, so that the hint (what was kept, what
    was lost, how to go on) is the last thing on the console. It then exits without
    unwinding: another thread may be blocked (the simulation's server thread waits on Ray),
    and whatever is kept must already be on disk. The previous handlers are restored when the
    block ends. Only the main thread can install signal handlers; elsewhere this is a no-op.
    """

    def stop(signum: int, _frame: object) -> None:
        try:
            reason = explain()
        except Exception as error:  # noqa: BLE001 - the process must stop all the same
            reason = f"({error!r} while describing the state)"
        terminal = _silence_output()
        stop_descendants(grace_seconds=2.0)
        message = f"\nfedcare: interrupted by {signal.Signals(signum).name}; {reason}\n"
        with contextlib.suppress(OSError):
            os.write(terminal, message.encode("utf-8", "replace"))
        os._exit(128 + signum)

    with handling_signals(stop):
        yield


def _silence_output() -> int:
    """Point descriptors 1 and 2 at ``os.devnull``; return a duplicate of the original 2."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    terminal = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    for descriptor in (1, 2):
        os.dup2(devnull, descriptor)
    os.close(devnull)
    return terminal
