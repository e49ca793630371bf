"""The run's progress on the admin's console: a live display on a terminal, one line per
finished round otherwise (CI, logs, ``flwr log``).

The live display fits the terminal's width (80 columns and up) on as many lines as it needs::

    heart-disease  round 7/20 ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━  0:00:41  ETA 0:01:17
      round 7: pooled loss 0.672 · accuracy 0.660 · AUC 0.712 · eps 0.42/1.00
      4 hospitals · 5.81 s

Its input is a finished round's metrics.csv row; the headline keys come from the caller
(``pooled_loss``, ``client_avg_<metric>``, ``epsilon_<level>_max``). A client average that
covers fewer hospitals than took part (a NaN AUC) says how many it covers. The epsilon's budget
is the one the hospitals reported (the row's ``privacy_reports``, not a CSV column: each
hospital's latest privacy report, with its own budget), never the run config's:
``eps 0.42/2.00`` when every hospital reported that budget, ``eps 0.42/2.00 (va's; budgets
2.00-3.00)`` when they differ, ``eps 0.42`` before any reported one.
"""

import math
import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

INDENT = "  "
REPORTS_KEY = "privacy_reports"  # a row's {hospital: its latest privacy report} (not in the CSV)
SEPARATOR = " · "
METRIC_LABELS = {"auc": "AUC", "rmse": "RMSE", "mae": "MAE", "r2": "R2", "f1": "F1"}


def metric_label(key: str) -> str:
    """``pooled_loss`` -> ``pooled loss``, ``client_avg_auc`` -> ``AUC`` (the hospitals' mean:
    the headline metric), ``epsilon_patient_max`` -> ``eps``.
    """
    if key.startswith("epsilon_"):
        return "eps"
    if key.startswith("client_avg_"):
        name = key.removeprefix("client_avg_")
        return METRIC_LABELS.get(name, name.replace("_", " "))
    if key.startswith("pooled_"):
        name = key.removeprefix("pooled_")
        return f"pooled {METRIC_LABELS.get(name, name.replace('_', ' '))}"
    return key.replace("_", " ")


def _number(value: object, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "n/a"
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def headline_items(row: dict[str, Any], headline: Iterable[str],
                   epsilon_budget: float | None = None) -> list[str]:
    """The row's headline metrics as short ``label value`` items.

    Epsilon reads ``eps <spent>/<budget>`` (its level named when it is the hospital level);
    a client average covering fewer hospitals than took part adds ``(k of n hospitals)``.
    """
    items = []
    participants = row.get("participants")
    for key in headline:
        if key not in row:
            continue
        value = row[key]
        if key.startswith("epsilon_"):
            level = " (hospital)" if key.startswith("epsilon_hospital") else ""
            items.append(f"eps {_number(value, 2)}{_budget(row, key, epsilon_budget)}{level}")
            continue
        item = f"{metric_label(key)} {_number(value)}"
        covered = row.get(f"{key}_hospitals")
        if (isinstance(covered, (int, float)) and isinstance(participants, (int, float))
                and covered < participants):
            item += f" ({int(covered)} of {int(participants)} hospitals)"
        items.append(item)
    return items


def _budget(row: dict[str, Any], key: str, fallback: float | None) -> str:
    """``/2.00``: the budget of the hospital that spent the most at the key's level, with its
    name and the range when the hospitals' budgets differ; the caller's budget if none was
    reported (``""``: none known).
    """
    found = row.get(REPORTS_KEY)
    reports: dict[str, dict[str, float]] = found if isinstance(found, dict) else {}
    budgets = {name: report["budget_epsilon"] for name, report in reports.items()
               if "budget_epsilon" in report}
    if not budgets:
        return "" if fallback is None else f"/{_number(fallback, 2)}"
    level = key.removeprefix("epsilon_").removesuffix("_max")
    top = max(budgets, key=lambda name: reports[name].get(level, 0.0))
    values = sorted(set(budgets.values()))
    if len(values) == 1:
        return f"/{_number(values[0], 2)}"
    return (f"/{_number(budgets[top], 2)} ({top}'s; budgets {_number(values[0], 2)}-"
            f"{_number(values[-1], 2)})")


def round_items(row: dict[str, Any]) -> list[str]:
    """Who took part in the round (or that it was aborted) and how long it took."""
    items = []
    if row.get("aborted") in (1, "1"):
        items.append("aborted: model unchanged")
    if isinstance(row.get("participants"), int):
        items.append(f"{row['participants']} hospitals")
    for key in ("declined", "rejected"):
        if row.get(key):
            items.append(f"{row[key]} {key}")
    if isinstance(row.get("seconds"), (int, float)):
        items.append(f"{row['seconds']:.2f} s")
    return items


def pack_items(items: list[str], width: int, *, first_prefix: str = "",
               indent: str = INDENT) -> list[str]:
    """Lay `items` out on lines of at most `width` columns, joined by `` · ``, never
    breaking an item (an item longer than a line is cut with an ellipsis).
    """
    lines: list[str] = []
    current = indent + first_prefix
    fresh = True
    for item in items:
        if len(indent) + len(item) > width:
            item = item[:max(1, width - len(indent) - 1)] + "…"
        joined = current + ("" if fresh else SEPARATOR) + item
        if len(joined) <= width or fresh:
            current, fresh = joined, False
        else:
            lines.append(current)
            current, fresh = indent + item, False
    if not fresh or current.strip():
        lines.append(current)
    return lines


def format_duration(seconds: float | None) -> str:
    """``0:01:17`` (hours:minutes:seconds), or ``-:--:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    whole = max(0, int(round(seconds)))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class RoundProgress:
    """The run's rounds so far, the clock, and the latest round's headline metrics.

    Parameters
    ----------
    num_rounds : int
        The run's planned rounds.
    headline : tuple of str
        The metrics.csv keys to show, in order.
    title : str
        The task's name.
    completed : int
        Rounds already done (a resumed run).
    epsilon_budget : float, optional
        A budget every hospital is known to share, shown next to the epsilon spent until the
        rows carry the hospitals' own (``privacy_reports``); None: only what they report.
    console : rich.console.Console, optional
        Where to draw (default: stderr). Not a terminal: one line per finished round.
    """

    def __init__(self, num_rounds: int, *, headline: tuple[str, ...], title: str,
                 completed: int = 0, epsilon_budget: float | None = None,
                 console: Console | None = None) -> None:
        self.num_rounds = num_rounds
        self.headline = headline
        self.title = title
        self.epsilon_budget = epsilon_budget
        self.console = console or Console(stderr=True)
        self.completed = completed
        self.row: dict[str, Any] | None = None
        self._first_completed = completed
        self._started = time.monotonic()
        self._first_done: float | None = None  # when this process finished its first round
        self._last_done: float | None = None
        # Printed output (fedcare's warnings) goes above the live display.
        self._live = (Live(self, console=self.console, refresh_per_second=2)
                      if self.console.is_terminal else None)

    def __enter__(self) -> "RoundProgress":
        """Start the live display (on a terminal) and the clock."""
        self._started = time.monotonic()
        if self._live is not None:
            self._live.start()
            # Live hides the cursor until it stops; Ctrl-C ends the process without unwinding
            # (simulations.engine.process_tree.exit_on_signals), which would leave it hidden.
            self.console.show_cursor(True)
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the live display."""
        if self._live is not None:
            self._live.stop()

    def round_done(self, row: dict[str, Any]) -> None:
        """Show a finished round's metrics.csv row."""
        now = time.monotonic()
        # Row r is the model after round r (a resumed run starts past its first rounds).
        self.completed = row["round"] if isinstance(row.get("round"), int) else self.completed + 1
        self.row = dict(row)
        self._first_done = self._first_done or now
        self._last_done = now
        if self._live is not None:
            self._live.refresh()
        else:
            self.console.print(self.summary_line(), soft_wrap=True, markup=False,
                               highlight=False)

    def counter(self) -> str:
        """``round 7/20``."""
        return f"round {self.completed}/{self.num_rounds}"

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the progress started (at `now`, default the monotonic clock)."""
        return (now or time.monotonic()) - self._started

    def eta(self, now: float | None = None) -> float | None:
        """Seconds to the last round, from this process's pace (None before its first round).

        After two rounds the pace leaves out the first, which also waited for the hospitals
        to start; the estimate counts down between rounds.
        """
        now = now or time.monotonic()
        remaining = self.num_rounds - self.completed
        done_here = self.completed - self._first_completed
        if remaining <= 0:
            return 0.0
        if done_here <= 0 or self._last_done is None or self._first_done is None:
            return None
        if done_here >= 2:
            per_round = (self._last_done - self._first_done) / (done_here - 1)
        else:
            per_round = self._last_done - self._started
        return max(0.0, remaining * per_round - (now - self._last_done))

    def summary_line(self) -> str:
        """One line for a finished round (no terminal)."""
        row = self.row or {}
        items = [*headline_items(row, self.headline, self.epsilon_budget), *round_items(row)]
        clock = f"{format_duration(self.elapsed())}, ETA {format_duration(self.eta())}"
        return f"{self.title} {self.counter()} ({clock}): " + SEPARATOR.join(items)

    def lines(self, width: int) -> list[Text]:
        """The live display's lines below the bar, each at most `width` columns."""
        if self.row is None:
            return [Text(INDENT + "starting the hospitals...", style="dim")]
        row = self.row
        headline = pack_items(headline_items(row, self.headline, self.epsilon_budget), width,
                              first_prefix=f"round {row.get('round', self.completed)}: ")
        return ([Text(line) for line in headline]
                + [Text(line, style="dim") for line in pack_items(round_items(row), width)])

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Render the progress to the width rich gives."""
        width = options.max_width
        now = time.monotonic()
        clock = f"{format_duration(self.elapsed(now))}  ETA {format_duration(self.eta(now))}"
        head = Table.grid(padding=(0, 1), expand=True)
        head.add_column(no_wrap=True)
        head.add_column(ratio=1, min_width=4)
        head.add_column(no_wrap=True, justify="right")
        title = self.title if len(self.title) + len(self.counter()) + len(clock) + 8 <= width \
            else self.title[:max(1, width - len(self.counter()) - len(clock) - 9)] + "…"
        head.add_row(Text.assemble((title, "bold cyan"), "  ", (self.counter(), "bold")),
                     ProgressBar(total=self.num_rounds, completed=self.completed),
                     Text(clock, style="dim"))
        yield head
        yield from self.lines(width)
