"""End to end: Ctrl-C stops ``fedcare simulate`` at once, nothing keeps running, and the run
resumes from its last checkpoint to the same model as an uninterrupted run.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from processes import (  # noqa: E402
    MARKER,
    REFERENCE_RUN,
    kill_marked,
    model_weights,
    wait_until_gone,
)

pytestmark = pytest.mark.slow

FEDCARE = Path(sys.executable).with_name("fedcare")


def test_sigint_stops_within_seconds_and_the_run_resumes_to_the_same_model(tmp_path,
                                                                           reference_run):
    whole, stopped = reference_run, tmp_path / "stopped"
    marker = uuid.uuid4().hex
    proc = subprocess.Popen([str(FEDCARE), *REFERENCE_RUN, "--out", str(stopped)],
                            env={**os.environ, MARKER: marker}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (stopped / "checkpoint" / "round-0001.json").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C: the whole process group
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - sent
        assert proc.returncode == 130, err[-3000:]
        assert elapsed < 15, f"took {elapsed:.1f} s to stop"
        assert "fedcare simulate --resume" in " ".join(err.split())
        assert wait_until_gone(marker, seconds=10.0) == [], "processes outlived Ctrl-C"
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_marked(marker)
    resumed = subprocess.run([str(FEDCARE), "simulate", "--resume", str(stopped)],
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for a, b in zip(model_weights(stopped), model_weights(whole), strict=True):
        np.testing.assert_array_equal(a, b)
