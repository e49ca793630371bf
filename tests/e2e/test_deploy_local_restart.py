"""End to end: a hospital worker SIGKILLed mid-run is restarted and the run finishes.

``fedcare deploy-local`` (real SuperLink, SuperNodes, hospital workers, TLS, authentication);
after round 1 the test SIGKILLs one hospital's worker (a process of the test's own tree, found
by the test's environment marker, killed by its pid). deploy-local restarts it (logged), the
run goes on without that hospital meanwhile, every round completes, the hospital takes part
again in every round that starts after its new worker listens, deploy-local exits 0, and no
process it started is left.
"""

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from processes import MARKER, kill_marked, marked_pids, wait_until_gone  # noqa: E402

pytestmark = pytest.mark.slow

FEDCARE = Path(sys.executable).with_name("fedcare")
HOSPITALS = 2
ROUNDS = 40  # about 2 s each: the worker re-imports TensorFlow for 10-60 s meanwhile
VICTIM = "hungary"  # heart-disease's second hospital


def _rows(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _worker_pid(marker: str, name: str) -> int | None:
    """The pid of hospital `name`'s worker among the test's marked processes."""
    for pid in marked_pids(marker):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"hospital-worker" in argv and any(
                arg.endswith(f"/hospitals/{name}/worker.sock".encode()) for arg in argv):
            return pid
    return None


def _listening_times(log: Path) -> list[float]:
    """When the worker's log says it listens (epoch seconds; logging's local asctime)."""
    times = []
    for line in log.read_text(errors="replace").splitlines():
        if "hospital worker listening on" in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            times.append(stamp.timestamp())
    return times


def test_a_killed_hospital_worker_is_restarted_and_the_run_finishes(short_tmp_path):
    out = short_tmp_path / "deployment"
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(
        [str(FEDCARE), "deploy-local", "--hospitals", str(HOSPITALS), "--rounds", str(ROUNDS),
         "--out", str(out), "--epsilon", "10", "--timeout", "900"],
        env={**os.environ, MARKER: marker}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    appeared: dict[int, float] = {}  # round -> when its metrics row appeared (epoch seconds)
    killed_at = None
    try:
        deadline = time.monotonic() + 1200
        while proc.poll() is None and time.monotonic() < deadline:
            for row in _rows(out / "run"):
                appeared.setdefault(int(row["round"]), time.time())
            if killed_at is None and appeared:
                pid = _worker_pid(marker, VICTIM)
                assert pid is not None, "the hospital's worker is not running"
                os.kill(pid, signal.SIGKILL)
                killed_at = time.time()
            time.sleep(0.2)
        output, _ = proc.communicate(timeout=60)
        survivors = wait_until_gone(marker, 20.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_marked(marker)

    assert proc.returncode == 0, output[-6000:]
    assert killed_at is not None, "the run ended before round 1's row appeared"
    assert survivors == [], f"processes left running after deploy-local: {survivors}"
    assert f"{VICTIM}-worker exited with status -9; restarted it" in output, output[-4000:]
    rows = _rows(out / "run")
    assert [int(row["round"]) for row in rows] == list(range(1, ROUNDS + 1))
    # Missing from at most the rounds it was down: every round that started (the previous
    # round's row appeared) after the restarted worker listened has both hospitals.
    for row in _rows(out / "run"):
        appeared.setdefault(int(row["round"]), time.time())
    listening = [t for t in _listening_times(out / "logs" / f"{VICTIM}-worker.log")
                 if t > killed_at]
    assert listening, "the restarted worker never listened"
    back = [int(row["round"]) for row in rows
            if int(row["round"]) > 1 and appeared[int(row["round"]) - 1] > listening[0]]
    assert back, f"no round started after the worker was back ({ROUNDS} rounds too few?)"
    assert all(rows[r - 1]["participants"] == str(HOSPITALS) for r in back), rows
    assert all(int(row["participants"]) >= HOSPITALS - 1 for row in rows), rows
