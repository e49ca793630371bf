"""``fedcare budget report`` and the disclosure log's part of ``fedcare budget`` / ``budget init``.

Hospital commands: they read the ledger and its disclosure log from the hospital's own disk and
import no accountant, TensorFlow, torch or Flower (``tests/client/test_command_imports.py``).
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from common.dp.disclosure_log import Verification
    from common.dp.ledger import PrivacyLedger

console = Console(highlight=False)


def _fail(message: str, code: int) -> NoReturn:
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                               soft_wrap=True)
    raise typer.Exit(code=code)


def record_init(ledger: "PrivacyLedger") -> None:
    """Record a new ledger's budget in its disclosure log; exit 1 if that cannot be done."""
    from common.dp.disclosure_log import DisclosureLogError, log_path, record_budget_init

    try:
        record = record_budget_init(ledger, by="fedcare budget init")
    except DisclosureLogError as error:
        _fail(f"the ledger {ledger.path} was created, but its disclosure log cannot record "
              f"the budget: {error}", 1)
    typer.echo(f"disclosure log {log_path(ledger.path)}: record {record['seq']}, the budget "
               "as created (anchored in the head file)")


def print_log_verification(ledger: "PrivacyLedger") -> "Verification":
    """Verify the ledger's disclosure log and say so; exit 1 if it fails."""
    from common.dp.disclosure_log import verify_beside

    verification = verify_beside(ledger)
    if not verification.ok:
        _fail(verification.summary(), 1)
    console.print(verification.summary(), soft_wrap=True)
    return verification


def budget_report(
    path: Annotated[Path, typer.Argument(help="The hospital's ledger JSON file.")],
    html: Annotated[Path, typer.Option(
        "--html", help="The HTML file to write: one self-contained page (no network needed) "
                       "for the hospital's data-protection officer.")],
    head: Annotated[Path | None, typer.Option(
        "--head", help="The ledger's head file; default: the one the ledger records.")] = None,
) -> None:
    """Write the page a data-protection officer reads: budgets, spending, runs, declines.

    Reads the ledger (checked against its head file) and its disclosure log (checked against
    its hash chain and the anchor in the head file). The page is written even when the log
    fails verification, saying so at the top; the command then exits 1.
    """
    from client.budget_report import Checks, generated_now, render_report
    from client.privacy import default_head_path
    from common.dp.disclosure_log import verify_beside
    from common.dp.ledger import PrivacyLedger
    from common.errors import LedgerError

    default_head = None if path.is_file() else default_head_path(path.stem)
    try:
        ledger = PrivacyLedger.read(path, head_path=head, default_head_path=default_head)
    except LedgerError as error:
        _fail(f"budget report {path}: {error}", 2)
    checks = Checks(None, f"{ledger.path} at write {ledger.sequence}, matching its head file "
                          f"{ledger.head_path}", verify_beside(ledger))
    page = render_report(ledger, checks, generated=generated_now())
    try:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(page, encoding="utf-8")
    except OSError as error:
        _fail(f"cannot write {html}: {error}", 2)
    typer.echo(f"{html}: disclosure report of hospital {ledger.hospital!r} "
               f"({len(checks.log.records)} log records)")
    if not checks.ok:
        _fail(checks.log.summary(), 1)
    console.print(checks.log.summary(), soft_wrap=True)
