"""End to end: a simulation killed with SIGKILL mid-run and resumed ends exactly as an
uninterrupted run with the same seed: same final model, each round once in metrics.csv, and
the same ledger entries (no round charged twice or missed).
"""

import csv
import json
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
RUN, ROUNDS = REFERENCE_RUN, 4  # the shared reference run's settings: 4 rounds


def _ledgers(run_dir: Path) -> dict[str, list[tuple]]:
    return {path.name: [(e["round"], e["noise_multiplier"], e["sample_rate"], e["steps"])
                        for data in [json.loads(path.read_text())]
                        for e in data["entries"] + data.get("test_entries", [])]
            for path in sorted((run_dir / "ledgers").glob("*.json"))}


def _rounds(run_dir: Path) -> list[str]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [row["round"] for row in csv.DictReader(handle)]


def _text(proc: subprocess.CompletedProcess) -> str:
    """Stderr with rich's line wrapping undone."""
    return " ".join(proc.stderr.split())


def _kill_after_checkpoint(out: Path, round_number: int) -> None:
    """Start the run, SIGKILL its process once round `round_number` is checkpointed."""
    marker = uuid.uuid4().hex
    proc = subprocess.Popen([str(FEDCARE), *RUN, "--out", str(out)],
                            env={**os.environ, MARKER: marker},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        manifest = out / "checkpoint" / f"round-{round_number:04d}.json"
        deadline = time.monotonic() + 300
        while not manifest.exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # With the server gone, Ray's workers follow (fate sharing); the test makes sure.
        wait_until_gone(marker, seconds=10.0)
    finally:
        proc.kill()
        kill_marked(marker)


def test_killed_and_resumed_run_equals_uninterrupted(fedcare_cli, tmp_path, reference_run):
    whole, resumed = reference_run, tmp_path / "resumed"

    _kill_after_checkpoint(resumed, round_number=2)
    assert not (resumed / "model.keras").exists()

    conflict, _ = fedcare_cli("simulate", "--resume", str(resumed), "--rounds", "7")
    assert conflict.returncode == 2 and f"--rounds 7 (the run has {ROUNDS})" in _text(conflict)

    proc, marker = fedcare_cli("simulate", "--resume", str(resumed))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in _text(proc)
    assert wait_until_gone(marker, seconds=1.0) == []

    assert _rounds(resumed) == [str(r) for r in range(1, ROUNDS + 1)]
    for expected, got in zip(model_weights(whole), model_weights(resumed), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert _ledgers(resumed) == _ledgers(whole)
    # A training release a round, the consortium explanation after the last (training track)
    # and the final model's evaluation on the test track (one).
    assert all(len(entries) == ROUNDS + 2 for entries in _ledgers(resumed).values())
    assert all(len(json.loads(path.read_text())["test_entries"]) == 1
               for path in (resumed / "ledgers").glob("*.json"))
    assert len(json.loads((resumed / "config.json").read_text())["resumed"]) == 1

    again, _ = fedcare_cli("simulate", "--resume", str(resumed))
    assert again.returncode == 0 and "already finished" in _text(again)
