"""Ctrl-C (SIGINT) or SIGTERM stops ``fedcare baseline`` at once: exit 130 / 143, a message
saying what was kept, nothing left running.
"""

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "e2e"))
from processes import MARKER, kill_marked, wait_until_gone  # noqa: E402

pytestmark = pytest.mark.slow  # each starts TensorFlow in a fresh process: 15-50 s loaded

FEDCARE = Path(sys.executable).with_name("fedcare")
# Long enough that the second model is still training when the signal arrives.
ROUNDS = "300"


def _interrupt(argv: list[str], sig: int, tmp_path: Path) -> tuple[int, str, float]:
    """Start `argv` in its own process group, send `sig` to the group once the first model is
    trained; return its exit status, its stderr and the seconds it took to stop.
    """
    marker = uuid.uuid4().hex
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(argv, env={**os.environ, MARKER: marker,
                                           "FEDCARE_HOME": str(tmp_path / "home")},
                                start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while "1 of 5 models" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no model trained within 120 s"
            time.sleep(0.1)
        sent = time.monotonic()
        os.killpg(proc.pid, sig)  # as Ctrl-C does: the whole process group
        proc.wait(timeout=60)
        elapsed = time.monotonic() - sent
        assert wait_until_gone(marker, seconds=10.0) == [], "processes outlived the signal"
        return proc.returncode, log.read_text(), elapsed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        kill_marked(marker)


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_baseline_stops_on_a_signal_within_seconds(tmp_path, sig, status):
    out = tmp_path / "baseline"
    code, err, elapsed = _interrupt([str(FEDCARE), "baseline", "--seeds", "1", "--rounds",
                                     ROUNDS, "--out", str(out)], sig, tmp_path)
    assert code == status, err[-3000:]
    assert elapsed < 15, f"took {elapsed:.1f} s to stop"
    message = " ".join(err.split())
    assert f"interrupted by {signal.Signals(sig).name}; stopping the baselines." in message
    assert "Run `fedcare baseline` again" in message
    assert not (out / "baseline.md").exists()  # the table needs every model


def test_an_interrupted_baseline_keeps_the_rows_of_the_models_trained(tmp_path):
    out = tmp_path / "baseline"
    out.mkdir()
    script = ("import sys; from pathlib import Path; from common.config import RunConfig; "
              "from simulations.engine.baseline import run_baselines; "
              f"run_baselines(RunConfig.from_run_config({{'num-server-rounds': {ROUNDS}}}), "
              "seeds=[0], out_dir=Path(sys.argv[1]))")
    code, err, elapsed = _interrupt([sys.executable, "-c", script, str(out)], signal.SIGINT,
                                    tmp_path)
    assert code == 130, err[-3000:]
    assert elapsed < 15, f"took {elapsed:.1f} s to stop"
    with open(out / "baseline.csv", newline="") as handle:
        kept = list(csv.DictReader(handle))
    trained = err.count(" models\n")  # one line per model trained before the signal
    assert 1 <= len(kept) == trained < 5
    assert kept[0]["method"] == "pooled" and 0 <= float(kept[0]["client_avg_accuracy"]) <= 1
    message = " ".join(err.split())
    assert (f"The rows of the {trained} of 5 models trained so far are kept in "
            f"{out / 'baseline.csv'}") in message
