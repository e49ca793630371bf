import os
import signal
import time

import pytest

from common.signals import raising_on_signals


class Stopped(Exception):
    pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_raises_the_given_error_and_handlers_are_restored(sig):
    before = signal.getsignal(sig)
    with pytest.raises(Stopped, match=signal.Signals(sig).name), raising_on_signals(Stopped):
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler runs at the next bytecode, or interrupts the sleep
        raise AssertionError("the signal did not interrupt the block")
    assert signal.getsignal(sig) is before
