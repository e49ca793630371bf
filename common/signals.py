"""SIGINT and SIGTERM as exceptions, so `finally` blocks (stopping processes, closing sockets)
run.
"""

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def handling_signals(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM go to `handler(signum, frame)`; the previous
    handlers are restored after. Only the main thread can install signal handlers; elsewhere
    this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def raising_on_signals(make_error: Callable[[str], BaseException]) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM raise ``make_error(signal name)``; handlers restored after.

    Only the main thread can install signal handlers; elsewhere this is a no-op.
    """

    def raise_error(signum: int, _frame: object) -> None:
        raise make_error(signal.Signals(signum).name)

    with handling_signals(raise_error):
        yield
