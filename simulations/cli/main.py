"""The ``fedcare`` command: a thin composition root over each role's own commands.

Hospital commands are defined in ``client/`` (budget, validate-data, predict, roster,
hospital-worker, app-digest, certs hospital), the consortium admin's in ``server/`` (certs
init/renew/show), the researcher's here in ``simulations/cli/`` (simulate, baseline, audit,
deploy-local). This module only registers them: neither side's package imports the other, and
heavy imports (TensorFlow, Flower) happen inside commands, so ``fedcare --help`` is instant.
"""

import os

# Skip TensorFlow's GPU probe on these CPU-only machines (its log chatter is common.quiet's).
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import typer  # noqa: E402

from client.budget_report_cli import budget_report  # noqa: E402
from client.certs_cli import certs_hospital  # noqa: E402
from client.cli import budget_app, hospital_worker, predict, validate_data  # noqa: E402
from client.pinning_cli import app_digest  # noqa: E402
from client.roster_cli import roster_app  # noqa: E402
from server.cli import certs_app  # noqa: E402
from simulations.cli.typer_compat import keep_argument_help  # noqa: E402

keep_argument_help()  # before any command is built (positional arguments' help)

from simulations.cli.audit_command import audit  # noqa: E402
from simulations.cli.baseline_command import baseline  # noqa: E402
from simulations.cli.deploy_command import deploy_local  # noqa: E402
from simulations.cli.simulate_command import simulate  # noqa: E402

app = typer.Typer(
    help="fedcare: privacy-preserving federated learning for hospitals.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """fedcare: privacy-preserving federated learning for hospitals."""


# The researcher's commands.
app.command()(simulate)
app.command()(baseline)
app.command("audit")(audit)
app.command("deploy-local")(deploy_local)
# The hospital's commands (client/).
budget_app.command("report")(budget_report)
app.add_typer(budget_app, name="budget")
app.command("validate-data")(validate_data)
app.command()(predict)
app.command("hospital-worker")(hospital_worker)
app.add_typer(roster_app, name="roster")
app.command("app-digest")(app_digest)
# The consortium admin's certificates (server/), with the hospital's own key pair beside them.
certs_app.command("hospital")(certs_hospital)
app.add_typer(certs_app, name="certs")


def main() -> None:
    """Entry point of the ``fedcare`` console script (ends without Python's teardown when
    nothing is left running: ``simulations.cli.prompt_exit``).
    """
    from simulations.cli.prompt_exit import run_then_exit

    run_then_exit(app)
