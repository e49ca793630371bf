"""End to end: what ``fedcare simulate`` shows on an 80-column terminal.

The command runs under a pseudo-terminal 80 columns wide and its output goes through a
terminal emulator (pyte), so the assertions read the screen the user sees (plus the lines
scrolled off it), not the raw byte stream with its cursor movements.
"""

import os
import re
import sys
import uuid
from pathlib import Path

import pytest

from simulations.drills.console_screenshot import run_in_terminal

sys.path.insert(0, str(Path(__file__).parent))
from processes import MARKER, kill_marked  # noqa: E402

pytestmark = pytest.mark.slow

FEDCARE = Path(sys.executable).with_name("fedcare")
# Third-party text that must not reach the console by default.
NOISE = ("cuda", "absl", "onednn", "cpu_feature_guard", "tensorflow binary", "deprecated",
         "futurewarning", "userwarning", "optimal order", "manually terminating")


def test_simulate_on_80_columns_shows_the_round_metrics_and_epsilon_and_no_library_noise(
        tmp_path):
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("FEDCARE_VERBOSE", "PYTHONWARNINGS")}
    env.update({"FEDCARE_HOME": str(tmp_path / "home"), MARKER: marker})
    try:
        capture = run_in_terminal(
            [str(FEDCARE), "simulate", "--rounds", "2", "--seed", "0",
             "--out", str(tmp_path / "run")],
            columns=80, rows=24, env=env, cwd=tmp_path, timeout=600)
    finally:
        kill_marked(marker)  # Ray's daemons may leave the process group: by marker too
    text = capture.text
    assert capture.returncode == 0, text
    assert all(len(line) <= 80 for line in capture.lines)
    # The live display was redrawn in place: one bar line, the last round's, with the clock.
    bars = [line for line in capture.lines if re.search(r"round \d+/2 ", line)]
    assert len(bars) == 1, text
    assert re.search(r"^heart-disease +round 2/2 .* \d+:\d\d:\d\d +ETA 0:00:00$", bars[0]), text
    assert re.search(r"accuracy \d\.\d{3}", text), text
    assert re.search(r"AUC \d\.\d{3}", text), text
    assert re.search(r"eps \d+\.\d\d/1\.00", text), text  # epsilon spent / budget
    lowered = text.lower()
    for noise in NOISE:
        assert noise not in lowered, (noise, text)
    assert (tmp_path / "run" / "report.md").is_file()
