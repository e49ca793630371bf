"""Hospital commands of the ``fedcare`` CLI (run at the hospital, on its own files)."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

hospital_app = typer.Typer(add_completion=False)
console = Console()


@hospital_app.command()
def budget(path: Annotated[Path, typer.Argument(help="The hospital's ledger JSON file.")]) -> None:
    """Show a hospital's privacy ledger: spent, remaining, rounds left at the current noise."""
    from common.dp.ledger import PrivacyLedger
    from common.errors import LedgerError

    try:
        ledger = PrivacyLedger.read(path)
    except LedgerError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}")
        raise typer.Exit(code=2) from None
    table = Table(title=f"privacy ledger of {ledger.hospital} ({ledger.accountant.upper()}, "
                        f"budget epsilon {ledger.budget_epsilon:g}, delta {ledger.budget_delta:g})")
    for column in ("level", "rounds charged", "epsilon spent", "remaining", "rounds left*"):
        table.add_column(column, justify="right")
    for level in ("patient", "hospital"):
        entries = [e for e in ledger.entries if e.event.level == level]
        left = ledger.rounds_left(entries[-1].event) if entries else "-"
        table.add_row(level, str(len(entries)), f"{ledger.epsilon_spent(level):.4f}",
                      f"{ledger.remaining(level):.4f}", str(left))
    console.print(table)
    console.print("* more rounds like the last one charged (same noise, sample rate, steps)")
