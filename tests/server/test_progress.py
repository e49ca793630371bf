"""The progress display at 80 columns: every line fits, and the headline is all there.

The live display redraws itself in place with cursor movements; the tests feed what it wrote
to a terminal emulator (pyte) and read the screen.
"""

import io
import math
import re

import pyte
from rich.console import Console

from server.progress import RoundProgress, format_duration, headline_items, pack_items

HEADLINE = ("pooled_loss", "client_avg_accuracy", "client_avg_auc", "epsilon_patient_max")


def _row(round_: int, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "round": round_, "seconds": 5.81, "participants": 4, "pooled_loss": 0.6723,
        "client_avg_accuracy": 0.6604, "client_avg_accuracy_hospitals": 4,
        "client_avg_auc": 0.7121, "client_avg_auc_hospitals": 4,
        "epsilon_patient_max": 0.4213, "declined": 0, "rejected": 0}
    row.update(overrides)
    return row


def _terminal(width: int = 80) -> Console:
    return Console(width=width, record=True, file=io.StringIO(), force_terminal=True,
                   color_system=None)


def _screen(console: Console, width: int = 80) -> list[str]:
    """What a `width`-column terminal shows after the console's output (blank lines cut)."""
    screen = pyte.Screen(width, 24)
    screen.set_mode(pyte.modes.LNM)  # a tty turns "\n" into "\r\n"
    pyte.Stream(screen).feed(console.file.getvalue())  # type: ignore[attr-defined]
    return [line.rstrip() for line in screen.display if line.strip()]


def test_the_renderable_alone_fits_80_columns():
    console = Console(width=80, record=True, file=io.StringIO())
    progress = RoundProgress(20, headline=HEADLINE, title="heart-disease", epsilon_budget=1.0,
                             console=Console(file=io.StringIO()))
    progress.round_done(_row(7, declined=1, rejected=2, seconds=1234.5))
    console.print(progress)
    lines = console.export_text().splitlines()
    assert len(lines) >= 3 and all(len(line) <= 80 for line in lines), lines
    assert "round 7/20" in lines[0] and "eps 0.42/1.00" in "\n".join(lines)


def test_live_display_fits_80_columns_with_counter_metrics_and_budget():
    console = _terminal()
    progress = RoundProgress(20, headline=HEADLINE, title="heart-disease", epsilon_budget=1.0,
                             console=console)
    with progress:
        progress.round_done(_row(7, declined=1, rejected=2, seconds=1234.5))
        raw = console.file.getvalue()  # type: ignore[attr-defined]
        # The cursor stays visible while the display runs (Ctrl-C exits without unwinding).
        assert raw.rfind("\x1b[?25h") > raw.rfind("\x1b[?25l")
    lines = _screen(console)
    # Three lines, each within the width (a longer one would wrap: the clock on line 2).
    assert len(lines) == 3, lines
    assert re.search(r"^heart-disease +round 7/20 .* ETA \d+:\d\d:\d\d$", lines[0]), lines
    text = "\n".join(lines)
    assert "round 7/20" in text
    assert "ETA" in text
    for expected in ("pooled loss 0.672", "accuracy 0.660", "AUC 0.712", "eps 0.42/1.00",
                     "4 hospitals", "1 declined", "2 rejected", "1234.50 s"):
        assert expected in text, (expected, text)


def test_live_display_fits_a_narrow_terminal_and_a_long_title():
    console = _terminal(width=50)
    progress = RoundProgress(200, headline=HEADLINE, title="a-task-with-a-very-long-name" * 2,
                             epsilon_budget=math.inf, console=console)
    with progress:
        progress.round_done(_row(123, client_avg_auc=math.nan, client_avg_auc_hospitals=3,
                                 epsilon_patient_max=math.inf))
    lines = _screen(console, width=50)
    assert re.search(r"round 123/200 .* ETA \d+:\d\d:\d\d$", lines[0]), lines
    assert lines[0].startswith("a-task-w") and "…" in lines[0]
    text = "\n".join(lines)
    assert "round 123/200" in text
    assert "AUC n/a (3 of 4 hospitals)" in text
    assert "eps inf/inf" in text


def test_before_the_first_round_it_says_the_hospitals_are_starting():
    console = _terminal()
    progress = RoundProgress(5, headline=HEADLINE, title="heart-disease", console=console)
    with progress:
        pass
    lines = _screen(console)
    assert "round 0/5" in lines[-2] and "-:--:--" in lines[-2]
    assert "starting the hospitals" in lines[-1]


def test_without_a_terminal_one_summary_line_per_finished_round():
    out = io.StringIO()
    console = Console(file=out, width=80)  # not a terminal: a log file, CI
    assert not console.is_terminal
    progress = RoundProgress(3, headline=HEADLINE, title="heart-disease", epsilon_budget=1.0,
                             console=console)
    with progress:
        for r in (1, 2, 3):
            progress.round_done(_row(r, epsilon_patient_max=0.3 * r))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # one line each, however long (not wrapped at 80)
    for r, line in enumerate(lines, start=1):
        assert line.startswith(f"heart-disease round {r}/3 (")
        assert "accuracy 0.660" in line and "AUC 0.712" in line
        assert f"eps {0.3 * r:.2f}/1.00" in line
    assert "ETA 0:00:00" in lines[-1]
    assert "\x1b[" not in out.getvalue()  # no terminal control codes in a log


def test_a_resumed_run_counts_from_its_checkpoint():
    out = io.StringIO()
    progress = RoundProgress(10, headline=HEADLINE, title="t", completed=6,
                             console=Console(file=out, width=80))
    assert progress.eta() is None  # no pace yet in this process
    with progress:
        progress.round_done(_row(7))
    assert progress.counter() == "round 7/10"
    assert out.getvalue().startswith("t round 7/10 (")


def test_headline_items_without_dp_show_no_epsilon_and_name_the_hospital_level():
    assert headline_items(_row(1), HEADLINE[:3]) == [
        "pooled loss 0.672", "accuracy 0.660", "AUC 0.712"]
    items = headline_items(_row(1, epsilon_hospital_max=2.5), ("epsilon_hospital_max",), 8.0)
    assert items == ["eps 2.50/8.00 (hospital)"]


def test_pack_items_never_splits_an_item_and_respects_the_width():
    items = [f"item-{i} {'x' * (i % 7)}" for i in range(30)] + ["y" * 200]
    lines = pack_items(items, 40, first_prefix="round 3: ")
    assert all(len(line) <= 40 for line in lines)
    joined = " · ".join(line.strip() for line in lines)
    for item in items[:-1]:
        assert item in joined
    assert lines[0].startswith("  round 3: item-0")
    assert lines[-1].endswith("…")


def test_format_duration():
    assert format_duration(0) == "0:00:00"
    assert format_duration(3725.4) == "1:02:05"
    assert format_duration(None) == "-:--:--"
    assert format_duration(math.inf) == "-:--:--"
