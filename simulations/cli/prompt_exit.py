"""End the ``fedcare`` process as soon as its command has finished, without Python's teardown.

After a simulation the interpreter holds thousands of modules (TensorFlow, Keras, Flower; Ray's
client after a run on its engine) whose teardown (module clearing, finalizers, exit hooks)
took 1.2 s of CPU after the run directory was complete, more than the rest of a one-round
run's shutdown. By then every output is written and closed, so the command flushes its
streams and its logging and ends with ``os._exit``.

It does so only when nothing could be cut short: no other thread of this process is running
and no child process is alive (a simulation stops its descendants before it returns);
otherwise the process exits the ordinary way, waiting for them as Python does.
"""

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn


def exit_status(code: object) -> int:
    """The process status of ``sys.exit(code)``: 0 for None, the int, else 1 (code printed)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def nothing_left_running() -> bool:
    """Whether this process runs no other thread and has no live child process."""
    if threading.active_count() > 1:
        return False
    import psutil

    return not any(child.status() != psutil.STATUS_ZOMBIE
                   for child in psutil.Process().children())


def run_then_exit(command: Callable[[], object]) -> NoReturn:
    """Run `command` (a CLI in standalone mode) and end the process with its exit status.

    Exceptions other than SystemExit propagate as usual (their traceback is the point).
    """
    try:
        command()
        status = 0
    except SystemExit as done:
        status = exit_status(done.code)
    if not nothing_left_running():
        sys.exit(status)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing reaches it
            stream.flush()
    os._exit(status)
