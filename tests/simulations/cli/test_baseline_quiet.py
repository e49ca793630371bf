"""`fedcare baseline` prints its own lines only: TensorFlow's start-up lines stay hidden
(and `--verbose`, the control, shows them, so the check can see them).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each starts TensorFlow in a fresh process: 15-50 s loaded

FEDCARE = Path(sys.executable).with_name("fedcare")
TENSORFLOW_LINES = ("absl::InitializeLog", "cudart_stub", "cpu_feature_guard", "cuInit")


def _baseline(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FEDCARE_VERBOSE"}
    return subprocess.run([str(FEDCARE), "baseline", "--seeds", "1", "--rounds", "1", "--out",
                           str(tmp_path / "out"), *extra], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_baseline_prints_no_tensorflow_start_up_lines(tmp_path):
    done = _baseline(tmp_path)

    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines()
                if any(noise in line for noise in TENSORFLOW_LINES)], done.stderr
    assert "baseline: pooled (seed 0) trained, 1 of 5 models" in done.stderr


def test_verbose_shows_them_the_control(tmp_path):
    done = _baseline(tmp_path, "--verbose")

    assert done.returncode == 0, done.stderr
    assert any(noise in done.stderr for noise in TENSORFLOW_LINES), done.stderr
