"""Live per-round progress on the admin's console (rich), or plain log lines when not a TTY."""

import logging
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

logger = logging.getLogger(__name__)


class RoundProgress:
    """A progress bar over the run's rounds with the latest round's headline metrics."""

    def __init__(self, num_rounds: int, *, headline: tuple[str, ...], title: str,
                 completed: int = 0) -> None:
        self.headline = headline
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task(title, total=num_rounds, completed=completed,
                                             metrics="starting hospitals")

    def __enter__(self) -> "RoundProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def round_done(self, row: dict[str, Any]) -> None:
        """Advance the bar with a finished round's metrics.csv row."""
        parts = [f"{key}={row[key]:.4g}" for key in self.headline if isinstance(row.get(key), float)]
        seconds = row.get("seconds")
        timing = f"{seconds:.2f}s " if isinstance(seconds, float) else ""
        text = f"round {row['round']}: {timing}" + " ".join(parts)
        self._progress.update(self._task, advance=1, metrics=text)
        if not self._progress.console.is_terminal:
            self._progress.console.print(text)
