"""The ``fedcare`` command's one terminal: its consoles and ``fail``.

Library code never prints; the commands (hospital ones in ``client/``, admin ones in
``server/``, the researcher's in ``simulations/cli/``) write through these two consoles, and
every refusal a user can cause ends in ``fail``: one red line naming the input, exit status 2.
"""

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console()  # results a command prints (standard output)
error_console = Console(stderr=True)  # progress, warnings and errors (standard error)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `message` as an error on standard error and exit with `code` (default 2)."""
    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code=code)


def warn(message: str) -> None:
    """Print `message` as a warning on standard error."""
    error_console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False)
