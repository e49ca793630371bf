"""What a command shows on an N-column terminal: run it under a pseudo-terminal, render the
byte stream with a terminal emulator (``pyte``, test extra), and draw the screen as a PNG.

    python -m simulations.drills.console_screenshot --out console.png -- fedcare simulate --rounds 2

The raw byte stream is not a screen: rich redraws its live display in place with cursor
movements, so only an emulator shows what the user saw. The PNG is the transcript (scrollback
plus the final screen), monospace on a dark background.
"""

import argparse
import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyte

HISTORY_LINES = 10_000
BACKGROUND = "#1e1e1e"
FOREGROUND = "#d4d4d4"
# pyte's colour names (SGR 30-37, 90-97) as a dark theme draws them.
PALETTE = {"black": "#3b3b3b", "red": "#f14c4c", "green": "#23d18b", "brown": "#e5e510",
           "blue": "#3b8eea", "magenta": "#d670d6", "cyan": "#29b8db", "white": "#e5e5e5"}
PALETTE.update({f"bright{name}": colour for name, colour in PALETTE.items()})

Run = tuple[str, str, bool]  # text, colour (#rrggbb), bold


@dataclass(frozen=True)
class TerminalCapture:
    """A finished command's exit status and the emulated terminal's lines."""

    returncode: int | None  # None: it was killed at the timeout
    scrollback: list[str]  # lines scrolled off the top, oldest first
    screen: list[str]  # the final screen, top to bottom
    styled: list[list[Run]]  # scrollback then screen, as runs of one colour (for the PNG)

    @property
    def lines(self) -> list[str]:
        """The transcript: scrollback then screen, trailing blank lines dropped."""
        lines = [*self.scrollback, *self.screen]
        while lines and not lines[-1].strip():
            lines.pop()
        return lines

    @property
    def text(self) -> str:
        """The screen's lines, joined by newlines."""
        return "\n".join(self.lines)


def run_in_terminal(argv: Sequence[str], *, columns: int = 80, rows: int = 24,
                    env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                    timeout: float = 600.0) -> TerminalCapture:
    """Run `argv` on a `columns` x `rows` pseudo-terminal (stdin, stdout and stderr) and
    return what the terminal shows when it exits.

    The command runs in a session (and process group) of its own; whatever of that group is
    still alive when this returns — finished, timed out or interrupted — is killed.
    """
    screen = pyte.HistoryScreen(columns, rows, history=HISTORY_LINES, ratio=0.5)
    stream = pyte.ByteStream(screen)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    environment = {**(env if env is not None else os.environ), "COLUMNS": str(columns),
                   "LINES": str(rows), "TERM": "xterm"}
    try:
        process = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave,
                                   env=environment, cwd=cwd, start_new_session=True)
    except OSError:
        os.close(master)
        raise
    finally:
        os.close(slave)
    returncode: int | None = None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal's other end has closed it
                    data = b""
                if not data:
                    break
                stream.feed(data)
            elif process.poll() is not None:
                break  # exited; descendants that still hold the terminal are killed below
        try:
            returncode = process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            returncode = None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.wait()
        os.close(master)
    rows_of_chars = [*screen.history.top, *(screen.buffer[y] for y in range(screen.lines))]
    return TerminalCapture(returncode=returncode,
                           scrollback=[_line_text(line, columns) for line in screen.history.top],
                           screen=[line.rstrip() for line in screen.display],
                           styled=[_line_runs(line, columns) for line in rows_of_chars])


def _line_text(line: Mapping[int, "pyte.screens.Char"], columns: int) -> str:
    return "".join(line[x].data if x in line else " " for x in range(columns)).rstrip()


def _colour(name: str, bold: bool) -> str:
    if name == "default":
        return "#ffffff" if bold else FOREGROUND
    if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name):
        return f"#{name}"
    return PALETTE.get(name, FOREGROUND)


def _line_runs(line: Mapping[int, "pyte.screens.Char"], columns: int) -> list[Run]:
    runs: list[Run] = []
    for x in range(columns):
        char = line.get(x)
        data = char.data if char is not None else " "
        style = (_colour(char.fg, char.bold), bool(char.bold)) if char is not None \
            else (FOREGROUND, False)
        if runs and (runs[-1][1], runs[-1][2]) == style:
            runs[-1] = (runs[-1][0] + data, *style)
        else:
            runs.append((data, *style))
    return runs


def render_png(lines: Sequence[str | list[Run]], path: Path, *, columns: int = 80,
               title: str = "", max_lines: int = 60) -> None:
    """Draw `lines` (the last `max_lines`; plain or as colour runs) as a `columns`-wide
    terminal, monospace on a dark background.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [[(line, FOREGROUND, False)] if isinstance(line, str) else line for line in lines]
    while runs and not "".join(text for text, _, _ in runs[-1]).strip():
        runs.pop()
    shown = runs[-max_lines:]
    if len(runs) > max_lines:
        shown[0] = [(f"[... {len(runs) - max_lines + 1} earlier lines ...]", "#808080", False)]
    font_size, char_width, line_height = 9.0, 0.6, 1.25  # em units of DejaVu Sans Mono
    rows = len(shown) + (2 if title else 0)
    width = (columns + 2) * char_width * font_size / 72
    height = (rows + 1) * line_height * font_size / 72
    figure = plt.figure(figsize=(width, height), dpi=150, facecolor=BACKGROUND)
    y_step = 1.0 / (rows + 1)
    y = 1.0 - y_step * 0.8
    if title:
        figure.text(1 / (columns + 2), y, title, family="DejaVu Sans Mono", size=font_size,
                    color="#8ab4f8", va="top", weight="bold")
        y -= 2 * y_step
    for line_runs in shown:
        column = 0
        for text, colour, bold in line_runs:  # each run at its own cell: no drift
            lead = len(text) - len(text.lstrip(" "))
            if text.strip():
                figure.text((1 + column + lead) / (columns + 2), y, text.strip(" "),
                            family="DejaVu Sans Mono",
                            size=font_size, color=colour, va="top",
                            weight="bold" if bold else "normal")
            column += len(text)
        y -= y_step
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, facecolor=figure.get_facecolor())
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command on an emulated terminal; save its transcript as a PNG (and print it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--columns", type=int, default=80)
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--title", default="", help="caption drawn above the transcript")
    parser.add_argument("--cwd", default=None, help="directory to run the command in")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("command", nargs="+", help="the command (after --)")
    args = parser.parse_args(argv)
    capture = run_in_terminal(args.command, columns=args.columns, rows=args.rows,
                              cwd=args.cwd, timeout=args.timeout)
    sys.stdout.write(capture.text + "\n")
    render_png(capture.styled, args.out, columns=args.columns, title=args.title)
    print(f"exit status {capture.returncode}; wrote {args.out}", file=sys.stderr)
    return 0 if capture.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
