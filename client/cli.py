"""Hospital commands of the ``fedcare`` CLI (run at the hospital, on its own files)."""

from pathlib import Path
from typing import Annotated, NoReturn

import click
import typer
import typer.core
from rich.console import Console

hospital_app = typer.Typer(add_completion=False)
console = Console()


class _BudgetGroup(typer.core.TyperGroup):
    """``fedcare budget PATH`` shows a ledger; ``fedcare budget init PATH ...`` creates one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Read a first argument that is no subcommand (a ledger path) as ``show PATH``."""
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


budget_app = typer.Typer(cls=_BudgetGroup, add_completion=False, no_args_is_help=True,
                         help="Show a hospital's privacy ledger (budget PATH), or create one "
                              "(budget init PATH).")

HeadOption = Annotated[Path | None, typer.Option(
    "--head", help="The ledger's head file (node config ledger-head-path), ideally on another "
                   "volume; default: .<name>.head beside the ledger.")]


@budget_app.command("show")
def budget(
    path: Annotated[Path, typer.Argument(help="The hospital's ledger JSON file.")],
    head: HeadOption = None,
) -> None:
    """Show a hospital's privacy ledger: both levels' epsilon spent, remaining, rounds left.

    The patient level composes every entry (a hospital-level release protects each patient
    too); after a patient-level entry the hospital level is unbounded.
    """
    from common.dp.ledger import PrivacyLedger
    from common.errors import LedgerError

    try:
        ledger = PrivacyLedger.read(path, head_path=head)
        spent = {level: ledger.epsilon_spent(level) for level in ("patient", "hospital")}
        unbounded = ledger.is_hospital_level_unbounded()
        last = ledger.entries[-1].event if ledger.entries else None
        last_hospital = next((e.event for e in reversed(ledger.entries)
                              if e.event.level == "hospital"), None)
        left = {"patient": ledger.rounds_left(last) if last else "-",
                "hospital": (0 if unbounded else ledger.rounds_left(last_hospital))
                if last_hospital else "-"}
    except LedgerError as error:
        _fail(str(error))
    from rich.table import Table

    table = Table(title=f"privacy ledger of {ledger.hospital} ({ledger.accountant.upper()}, "
                        f"budget epsilon {ledger.budget_epsilon:g}, delta {ledger.budget_delta:g})")
    for column in ("level", "entries composed", "epsilon spent", "remaining", "rounds left*"):
        table.add_column(column, justify="right")
    hospital_entries = sum(e.event.level == "hospital" for e in ledger.entries)
    table.add_row("patient", str(len(ledger.entries)), f"{spent['patient']:.4f}",
                  f"{ledger.remaining('patient'):.4f}", str(left["patient"]))
    if unbounded:
        table.add_row("hospital", str(hospital_entries), "unbounded", "-", "0")
    else:
        table.add_row("hospital", str(hospital_entries), f"{spent['hospital']:.4f}",
                      f"{ledger.remaining('hospital'):.4f}", str(left["hospital"]))
    console.print(table)
    console.print("patient level: every entry (hospital-level releases at sample rate 1); "
                  "* more rounds like the last one charged (same noise, sample rate, steps)")
    if unbounded:
        console.print("hospital level: unbounded, since this ledger holds patient-level "
                      "releases; hospital-level runs are declined")


@budget_app.command("init")
def budget_init(
    path: Annotated[Path, typer.Argument(help="The ledger file to create (must not exist).")],
    epsilon: Annotated[float, typer.Option(help="The budget's epsilon, for the ledger's "
                                                "whole life (> 0).")] = 1.0,
    delta: Annotated[float, typer.Option(help="The budget's delta, in (0, 1).")] = 1e-5,
    accountant: Annotated[str, typer.Option(help="Opacus accountant: rdp or prv.")] = "rdp",
    head: HeadOption = None,
    hospital: Annotated[str | None, typer.Option(
        help="The hospital's name, as its node config gives it; default: the file name "
             "without its extension.")] = None,
) -> None:
    """Create a hospital's privacy ledger with its budget (once; it is never recreated).

    fedcare refuses to train against a configured ledger that is missing: this command is
    the deliberate act that starts a budget. Defaults are fedcare's strictest built-in
    budget (epsilon 1, delta 1e-5, RDP).
    """
    from common.dp.ledger import PrivacyLedger
    from common.errors import LedgerError

    name = hospital if hospital is not None else path.stem
    try:
        ledger = PrivacyLedger.create(path, hospital=name, budget_epsilon=epsilon,
                                      budget_delta=delta, accountant=accountant,  # type: ignore[arg-type]
                                      head_path=head)
    except LedgerError as error:
        _fail(f"budget init {path}: {error}")
    except ValueError as error:  # name the options the user typed
        message = str(error).replace("budget_epsilon", "--epsilon").replace("budget_delta",
                                                                             "--delta")
        _fail(f"budget init {path}: {message.replace('accountant must', '--accountant must')}")
    typer.echo(f"{ledger.path}: privacy ledger of hospital {ledger.hospital!r}, budget epsilon "
               f"{ledger.budget_epsilon:g}, delta {ledger.budget_delta:g} "
               f"({ledger.accountant.upper()}), head file {ledger.head_path}")


def _fail(message: str, code: int = 2) -> NoReturn:
    """Print an error to stderr and exit with `code` (2: unusable input)."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code=code)


@hospital_app.command("validate-data")
def validate_data(
    path: Annotated[Path, typer.Argument(help="The hospital's CSV file.")],
    schema: Annotated[Path, typer.Option(help="The consortium's schema file (JSON).")],
) -> None:
    """Check a data file against the consortium's schema before joining a federation.

    Prints every problem as `row R, column C: what` (header = row 1) and exits 1 if any.

    Exits 0 with a one-line summary and the schema's sha256 (the run config's
    csv.schema-sha256) when the file is usable, 2 when the schema itself is unusable.
    Nothing leaves this machine.
    """
    from common.data_validation import check_table, read_table, sort_problems, summarize
    from common.schema import DataSchema, SchemaError

    try:
        loaded = DataSchema.load(schema)
    except SchemaError as error:
        _fail(str(error))
    table, problems = read_table(path)
    if table is not None:
        problems += check_table(table, loaded)
    if problems or table is None:  # read_table returns no table only with a problem
        for problem in sort_problems(problems, loaded):  # a file-level one: named by the path
            typer.echo(f"{path}: {problem.detail}" if problem.location == "file" else problem)
        typer.echo(f"{path}: {summarize(problems)}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"{path}: {table.data_rows} data rows, {len(loaded.columns)} columns, no problems "
               f"(schema sha256 {loaded.sha256})")


@hospital_app.command()
def predict(
    model: Annotated[Path, typer.Option(help="The federation's model.keras.")],
    data: Annotated[Path, typer.Option(help="CSV of new patients (label column optional).")],
    preprocessing: Annotated[Path | None, typer.Option(
        help="This hospital's preprocessing statistics, written next to its ledger when it "
             "trained: the ledger's name with .preprocessing.json for .json (ledger "
             "hospital-0.json: hospital-0.preprocessing.json).")] = None,
    schema: Annotated[Path | None, typer.Option(
        help="The consortium's schema, checked against the one the hospital trained with.")] = None,
    out: Annotated[Path, typer.Option(help="Where to write the predictions (CSV).")] = Path(
        "predictions.csv"),
) -> None:
    """Predict for new patients with this hospital's own preprocessing (task csv).

    Writes one row per patient: `row` (its row in --data), the given label if any,
    `predicted`, and class probabilities (classification).

    Rows failing the schema check are listed as in validate-data (exit 1).
    Unusable inputs exit 2.
    """
    from common.quiet import quiet_third_party

    quiet_third_party()  # before Keras imports TensorFlow (FEDCARE_VERBOSE=1 keeps its lines)
    from common.data_validation import summarize
    from common.schema import DataSchema, SchemaError
    from common.tasks.csv_preprocessing import CsvPreprocessing, PreprocessingError

    if preprocessing is None:
        _fail("predict needs --preprocessing: the hospital's own preprocessing statistics of "
              "task csv, written next to its ledger when it trained (ledger hospital-0.json: "
              "hospital-0.preprocessing.json; with --schema to check it). Built-in tasks "
              "(heart-disease, breast-cancer, diabetes, digits) are research data sets "
              "preprocessed inside fedcare: load model.keras with keras.saving.load_model and "
              "call model.predict on features prepared as common/tasks/ does.")
    try:
        fitted = CsvPreprocessing.load(preprocessing)
    except PreprocessingError as error:
        _fail(str(error))
    if schema is not None:
        try:
            expected = DataSchema.load(schema)
        except SchemaError as error:
            _fail(str(error))
        if expected.sha256 != fitted.schema.sha256:
            _fail(f"schema {schema} has sha256 {expected.sha256}, but {preprocessing} was "
                  f"fitted under schema sha256 {fitted.schema.sha256}")
    from client.prediction import encode_new_patients, prediction_frame

    patients, problems = encode_new_patients(data, fitted)
    if patients is None:
        for problem in problems:
            typer.echo(str(problem))
        typer.echo(f"{data}: {summarize(problems)}", err=True)
        raise typer.Exit(code=1)
    import keras

    try:
        network = keras.saving.load_model(model)
    except (OSError, ValueError) as error:
        _fail(f"cannot load model {model}: {error}")
    width = network.input_shape[-1]
    if width != patients.x.shape[1]:
        _fail(f"model {model} takes {width} inputs, but the schema encodes "
              f"{patients.x.shape[1]} ({', '.join(fitted.schema.encoded_feature_names)}): "
              "was it trained under this schema?")
    outputs = network.predict(patients.x, verbose=0)
    frame = prediction_frame(outputs, patients, fitted.schema)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    typer.echo(f"{out}: predictions for {len(frame)} patients")


def hospital_worker(
    socket: Annotated[Path, typer.Option(help="Unix socket to listen on (created 0600), e.g. in the hospital's own directory; node config worker-socket names it.")],
    authkey_file: Annotated[Path | None, typer.Option(help="Key file (hex, 0600) the relay must prove it holds; made if absent. Default: SOCKET.authkey.")] = None,
    node_config: Annotated[Path | None, typer.Option(help="The SuperNode's node config file (.toml): used instead of the relayed one, so the shipped code cannot change data, ledger or budget.")] = None,
) -> None:
    """Serve this hospital's ClientApp from one long-running process (start before flower-supernode).

    Loads fedcare's ClientApp (TensorFlow) once; Flower's per-message process relays each
    message here (node config worker-socket). Stops on SIGTERM or Ctrl-C.
    """
    import logging

    from client.worker_link import default_authkey_file

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    own_config = None
    if node_config is not None:
        from flwr.common.config import parse_config_args

        from client.node_config import NodeConfig

        if node_config.suffix != ".toml":
            _fail(f"--node-config {node_config}: give the .toml file the SuperNode reads")
        try:
            own_config = parse_config_args([str(node_config)])
            NodeConfig.from_node_config(own_config)
        except (OSError, ValueError) as error:
            _fail(f"--node-config {node_config}: {error}")
    from client.app import app as fedcare_app
    from client.worker import serve

    try:
        serve(socket, authkey_file or default_authkey_file(socket), fedcare_app,
              node_config=own_config)
    except ValueError as error:
        _fail(str(error))
