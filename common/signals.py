"""SIGINT and SIGTERM as exceptions, so `finally` blocks (stopping processes, closing sockets) run."""

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def raising_on_signals(make_error: Callable[[str], BaseException]) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM raise ``make_error(signal name)``; handlers restored after.

    Only the main thread can install signal handlers; elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_error(signum: int, _frame: object) -> None:
        raise make_error(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, raise_error) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
