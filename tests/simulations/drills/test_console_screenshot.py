"""The terminal capture behind the console test and screenshots: what a terminal of the given
width shows, the command's own process group stopped, and a PNG of it.
"""

import os
import sys
import time

from simulations.drills.console_screenshot import render_png, run_in_terminal


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def test_capture_sees_the_terminal_width_wraps_long_lines_and_applies_redraws():
    code = ("import os, sys\n"
            "print(os.get_terminal_size(1).columns, sys.stdout.isatty())  # the ioctl\n"
            "print('x' * 100)\n"
            "sys.stdout.write('overwritten\\rfinal      \\n')\n")
    capture = run_in_terminal([sys.executable, "-c", code], columns=80, rows=10, timeout=60)
    assert capture.returncode == 0
    assert capture.lines == ["80 True", "x" * 80, "x" * 20, "final"]


def test_lines_scrolled_off_the_screen_are_kept():
    capture = run_in_terminal([sys.executable, "-c", "for i in range(30): print(i)"],
                              columns=40, rows=5, timeout=60)
    assert capture.lines == [str(i) for i in range(30)]
    assert len(capture.screen) == 5 and capture.scrollback


def test_whatever_the_command_left_in_its_process_group_is_stopped():
    capture = run_in_terminal(["sh", "-c", "sleep 300 & echo $!"], columns=80, rows=5,
                              timeout=60)
    sleeper = int(capture.lines[0])
    deadline = time.monotonic() + 10
    while _alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(sleeper)


def test_a_command_past_its_timeout_is_killed():
    started = time.monotonic()
    capture = run_in_terminal([sys.executable, "-c", "import time; print('up'); time.sleep(300)"],
                              columns=80, rows=5, timeout=3)
    assert capture.returncode is None
    assert capture.lines == ["up"]
    assert time.monotonic() - started < 30


def test_render_png_writes_an_image_of_the_styled_lines(tmp_path):
    capture = run_in_terminal(
        [sys.executable, "-c", "print('\\x1b[1;32mdone\\x1b[0m: plain')"], columns=80, rows=5,
        timeout=60)
    assert capture.styled[0][0] == ("done", "#23d18b", True)
    path = tmp_path / "shots" / "console.png"
    render_png(capture.styled, path, title="a title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 1000
