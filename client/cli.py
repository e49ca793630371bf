"""Hospital commands of the ``fedcare`` CLI (run at the hospital, on its own files).

Each command imports what it computes with inside its body: showing a ledger, checking a
data file, reading a roster or a certificate loads no TensorFlow, torch or Opacus.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import click
import typer
import typer.core
from rich.console import Console

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from common.dp.ledger import PrivacyLedger
    from common.tasks.csv_preprocessing import CsvPreprocessing

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
    "--head", help="The ledger's head file (node config ledger-head-path), apart from the "
                   "ledger's directory; default: the one the ledger records.")]
InitHeadOption = Annotated[Path | None, typer.Option(
    "--head", help="Where to keep the ledger's head file (node config ledger-head-path), "
                   "apart from the ledger's directory, ideally on another volume or with "
                   "another party; the ledger records it. Default: "
                   "$FEDCARE_HOME/heads/HOSPITAL.head (~/.fedcare).")]


@dataclass(frozen=True, slots=True)
class _Figures:
    """A ledger's epsilon spent per level and track (inf: unbounded), and rounds like the
    last left (on its track).
    """

    patient: float  # training track
    hospital: float  # both tracks
    rounds_left: int | None  # None: not known (no entry yet, or not recorded)
    test: float = 0.0  # test track, patient level
    sequential: float | None = None  # both tracks composed (Opacus), when not parallel


@budget_app.command("show")
def budget(
    path: Annotated[Path, typer.Argument(help="The hospital's ledger JSON file.")],
    head: HeadOption = None,
    recompute: Annotated[bool, typer.Option(
        "--recompute", help="Recompute every figure with Opacus from the ledger's history "
                            "and say whether the recorded figures agree (exit 1 if not).")
                         ] = False,
) -> None:
    """Show a hospital's privacy ledger: epsilon spent per level and track, remaining, rounds left.

    The figures are the ones recorded with the last entry, computed by Opacus when it was
    charged (no accountant is loaded to show them); ``--recompute`` recomputes them. Two
    tracks: releases of training rows and of test rows (evaluation), each with its own
    budget; with the split pinned before the first release a patient's epsilon is the larger
    of the two. The patient level composes every entry of its track (a hospital-level release
    protects each patient too); the hospital level both tracks; after a patient-level entry
    the hospital level is unbounded.
    """
    from common.dp.ledger import PrivacyLedger
    from common.errors import LedgerError

    default_head = None
    if not path.is_file():  # deleted, or never made: its head file (if any) tells which
        from client.privacy import default_head_path

        default_head = default_head_path(path.stem)
    try:
        ledger = PrivacyLedger.read(path, head_path=head, default_head_path=default_head)
        shown, why = _recorded_figures(ledger)
        if recompute or shown is None:
            recomputed = _opacus_figures(ledger)
    except LedgerError as error:
        _fail(str(error))
    if recompute:
        _print_budget(ledger, recomputed, "recomputed by Opacus from the ledger's history")
        _compare(shown, why, recomputed)
    elif shown is None:
        _print_budget(ledger, recomputed, f"recomputed by Opacus: {why}")
    else:
        _print_budget(ledger, shown, why)
    from client.budget_report_cli import print_log_verification

    print_log_verification(ledger)  # exit 1 if the disclosure log fails its chain or anchor


def _recorded_figures(ledger: "PrivacyLedger") -> tuple[_Figures | None, str]:
    """The figures recorded with the last entry, or None and why they cannot be shown."""
    after = ledger.recorded_figures
    if not ledger.entries:
        return _Figures(0.0, 0.0, None), "no entries yet"
    if after is None:
        return None, "the last entry records no figures (charged by an older fedcare)"
    if (after.delta, after.budget_epsilon) != (ledger.budget_delta, ledger.budget_epsilon) or (
            after.test is not None and (after.test_delta, after.test_budget_epsilon)
            != (ledger.test_budget_delta, ledger.test_budget_epsilon)):
        return None, "the budget was lowered after the last charge"
    if after.test is None and any(e.track == "test" for e in ledger.entries):
        return None, "the last entry records no test-track figure"
    if not ledger.tracks_parallel and any(e.track == "test" for e in ledger.entries):
        return None, "the tracks compose sequentially (no split pinned before the first release)"
    how = f"recorded at charge time (Opacus, delta {after.delta:g})"
    return _Figures(after.patient, after.hospital, after.rounds_left,
                    after.test if after.test is not None else 0.0), how


def _opacus_figures(ledger: "PrivacyLedger") -> _Figures:
    """Every figure computed by Opacus from the ledger's recorded history (imports Opacus)."""
    from common.wire.modes import LedgerTrack, PrivacyLevel

    last = ledger.entries[-1] if ledger.entries else None
    sequential = None
    if not ledger.tracks_parallel and any(e.track == LedgerTrack.TEST for e in ledger.entries):
        sequential = ledger.patient_guarantee()[0]
    return _Figures(ledger.epsilon_spent(PrivacyLevel.PATIENT),
                    ledger.epsilon_spent(PrivacyLevel.HOSPITAL),
                    ledger.rounds_left(last.event, track=last.track) if last is not None
                    else None, ledger.epsilon_spent(PrivacyLevel.PATIENT, LedgerTrack.TEST),
                    sequential)


def _compare(recorded: _Figures | None, why: str, recomputed: _Figures) -> None:
    """Say whether the recorded figures equal Opacus's; exit 1 if any differs."""
    if recorded is None:
        console.print(f"no recorded figures to compare: {why}")
        return
    pairs = (("patient-level epsilon", recorded.patient, recomputed.patient),
             ("hospital-level epsilon", recorded.hospital, recomputed.hospital),
             ("test-track epsilon", recorded.test, recomputed.test))
    wrong = [f"{name}: recorded {mine:.6g}, Opacus {theirs:.6g}" for name, mine, theirs in pairs
             if not (mine == theirs or math.isclose(mine, theirs, rel_tol=1e-9))]
    if recorded.rounds_left is not None and recorded.rounds_left != recomputed.rounds_left:
        wrong.append(f"rounds left: recorded {recorded.rounds_left}, Opacus "
                     f"{recomputed.rounds_left}")
    if wrong:
        _fail("the recorded figures DISAGREE with Opacus on the ledger's history: "
              + "; ".join(wrong), code=1)
    checked = "both levels' and the test track's epsilon" + (
        ", rounds left" if recorded.rounds_left is not None else "")
    console.print(f"the recorded figures agree with Opacus ({checked})")


def _print_budget(ledger: "PrivacyLedger", figures: _Figures, source: str) -> None:
    """Print the ledger's table: spent, remaining and rounds left per level."""
    from rich.table import Table

    from common.wire.modes import LedgerTrack

    table = Table(title=f"privacy ledger of {ledger.hospital} ({ledger.accountant.upper()}, "
                        f"budget epsilon {ledger.budget_epsilon:g}, delta {ledger.budget_delta:g})")
    for column in ("level", "track", "entries composed", "epsilon spent", "budget",
                   "remaining", "rounds left*"):
        table.add_column(column, justify="right")
    last_track = ledger.entries[-1].track if ledger.entries else "train"
    left = "-" if figures.rounds_left is None else str(figures.rounds_left)
    unbounded = math.isinf(figures.hospital)
    tracks = [e.track for e in ledger.entries]
    hospital_entries = sum(e.event.level == "hospital" for e in ledger.entries)
    for level, track, count, spent, budget in (
            ("patient", "training rows", tracks.count(LedgerTrack.TRAIN), figures.patient,
             ledger.budget_epsilon),
            ("patient", "test rows", tracks.count(LedgerTrack.TEST), figures.test,
             ledger.test_budget_epsilon),
            ("hospital", "both", hospital_entries, figures.hospital, ledger.budget_epsilon)):
        shown_left = left if last_track in track or level == "hospital" else "-"
        if math.isinf(spent):
            table.add_row(level, track, str(count), "unbounded", f"{budget:g}", "-", "0")
        else:
            table.add_row(level, track, str(count), f"{spent:.4f}", f"{budget:g}",
                          f"{max(0.0, budget - spent):.4f}", shown_left)
    console.print(table)
    console.print(f"figures {source}; head file {ledger.head_path}")
    console.print(_guarantee_line(ledger, figures))
    console.print("patient level: every entry of its track (hospital-level releases at sample "
                  "rate 1); * more releases like the last one charged (same noise, sample rate, "
                  "steps, track)" + ("; - : not recorded (PRV), see --recompute"
                                     if ledger.entries and figures.rounds_left is None else ""))
    if unbounded:
        console.print("hospital level: unbounded, since this ledger holds patient-level "
                      "releases; hospital-level runs are declined")


def _guarantee_line(ledger: "PrivacyLedger", figures: _Figures) -> str:
    """How the two tracks compose into one patient's epsilon, with the figure where known."""
    split = ledger.split
    if ledger.tracks_parallel and split is not None:
        return (f"a patient's epsilon: {max(figures.patient, figures.test):.4f}, the larger of "
                f"the two tracks (parallel: split {split.digest[:16]} pinned before the first "
                "release, so every patient is on one side)")
    why = ("no split pinned yet" if split is None else
           "the split was pinned after earlier releases")
    figure = ("" if figures.sequential is None else
              f" = {figures.sequential:.4f} (Opacus on both tracks together)")
    return (f"a patient's epsilon: both tracks composed sequentially{figure} ({why}; at most "
            "their sum; --recompute computes it)")


@budget_app.command("init")
def budget_init(
    path: Annotated[Path, typer.Argument(help="The ledger file to create (must not exist).")],
    epsilon: Annotated[float, typer.Option(help="The budget's epsilon, for the ledger's "
                                                "whole life (> 0).")] = 1.0,
    delta: Annotated[float, typer.Option(help="The budget's delta, in (0, 1).")] = 1e-5,
    accountant: Annotated[str, typer.Option(help="Opacus accountant: rdp or prv.")] = "rdp",
    head: InitHeadOption = None,
    hospital: Annotated[str | None, typer.Option(
        help="The hospital's name, as its node config gives it; default: the file name "
             "without its extension.")] = None,
    test_epsilon: Annotated[float | None, typer.Option(
        help="The test track's budget epsilon (releases of test rows: evaluation), for the "
             "ledger's whole life; default: --epsilon.")] = None,
    test_delta: Annotated[float | None, typer.Option(
        help="The test track's delta; default: --delta.")] = None,
) -> None:
    """Create a hospital's privacy ledger with its budget, and its head file apart from it.

    fedcare refuses to train against a ledger that is missing: this command is the
    deliberate act that starts a budget, once. The head file (printed) is kept outside the
    ledger's directory, so deleting or restoring that directory is refused rather than taken
    for a fresh budget. Defaults are fedcare's strictest built-in budget (epsilon 1, delta
    1e-5, RDP). The test track (evaluation of the hospital's test rows) has its own budget,
    by default the same values; the two compose in parallel once the split is pinned.
    """
    from client.privacy import default_head_path
    from common.dp.ledger import PrivacyLedger
    from common.errors import LedgerError

    name = hospital if hospital is not None else path.stem
    head_file = head if head is not None else default_head_path(name)
    try:
        ledger = PrivacyLedger.create(path, hospital=name, budget_epsilon=epsilon,
                                      budget_delta=delta, accountant=accountant,  # type: ignore[arg-type]
                                      head_path=head_file, test_budget_epsilon=test_epsilon,
                                      test_budget_delta=test_delta)
    except LedgerError as error:
        _fail(f"budget init {path}: {error}")
    except ValueError as error:  # name the options the user typed
        message = str(error).replace("test_budget_epsilon", "--test-epsilon").replace(
            "test_budget_delta", "--test-delta")
        message = message.replace("budget_epsilon", "--epsilon").replace("budget_delta",
                                                                         "--delta")
        _fail(f"budget init {path}: {message.replace('accountant must', '--accountant must')}")
    typer.echo(f"{ledger.path}: privacy ledger of hospital {ledger.hospital!r}, budget epsilon "
               f"{ledger.budget_epsilon:g}, delta {ledger.budget_delta:g} "
               f"({ledger.accountant.upper()}); test track (evaluation of its test rows) "
               f"epsilon {ledger.test_budget_epsilon:g}, delta {ledger.test_budget_delta:g}")
    typer.echo(f"head file {ledger.head_path} (recorded in the ledger; node config "
               "ledger-head-path may name it). Keep it where deleting or restoring the ledger's "
               "directory does not reach: another volume, or another party")
    if ledger.path.resolve().parent in ledger.head_path.resolve().parents:
        Console(stderr=True).print(
            "[bold yellow]warning:[/] the head file is inside the ledger's directory: deleting "
            "or restoring that directory would reset the budget unnoticed", highlight=False)
    from client.budget_report_cli import record_init

    record_init(ledger)  # the disclosure log's budget-init record (exit 1 if it cannot be)


def _fail(message: str, code: int = 2) -> NoReturn:
    """Print an error to stderr and exit with `code` (2: unusable input).

    Unwrapped, so that the paths it names can be copied whole.
    """
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                               soft_wrap=True)
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


EXPLAIN_HELP = ("Also write, beside each prediction, the features that pushed it up or down "
                "with their attributions against the public baseline (at the hospital; "
                "nothing is sent). --data heart-disease:cleveland explains a built-in "
                "hospital's test rows.")


@hospital_app.command()
def predict(
    data: Annotated[Path, typer.Option(help="CSV of new patients (label column optional).")],
    model: Annotated[str, typer.Option(
        help="global: the federation's final model this hospital received "
             "(<ledger stem>.global.keras beside --preprocessing); personal: this hospital's "
             "own personal model, never sent (<ledger stem>.personal.keras); or the path of a "
             "model.keras.")] = "global",
    preprocessing: Annotated[Path | None, typer.Option(
        help="This hospital's preprocessing statistics, written next to its ledger when it "
             "trained: the ledger's name with .preprocessing.json for .json (ledger "
             "hospital-0.json: hospital-0.preprocessing.json).")] = None,
    schema: Annotated[Path | None, typer.Option(
        help="The consortium's schema, checked against the one the hospital trained with.")] = None,
    out: Annotated[Path, typer.Option(help="Where to write the predictions (CSV).")] = Path(
        "predictions.csv"),
    explain: Annotated[bool, typer.Option("--explain", help=EXPLAIN_HELP)] = False,
) -> None:
    """Predict for new patients with this hospital's own preprocessing (task csv).

    Writes one row per patient: `row` (its row in --data), its identifier columns (those the
    schema declares in `ids`, e.g. patient_id, as written), the given label if any,
    `predicted`, and class probabilities (classification).

    Rows failing the schema check are listed as in validate-data (exit 1).
    Unusable inputs exit 2.
    """
    from common.quiet import quiet_third_party

    quiet_third_party()  # before Keras imports TensorFlow (FEDCARE_VERBOSE=1 keeps its lines)
    from common.data_validation import summarize
    from common.schema import DataSchema, SchemaError
    from common.tasks.csv_preprocessing import CsvPreprocessing, PreprocessingError

    if _predict_builtin(data, model, out, explain=explain):  # e.g. heart-disease:cleveland
        return
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
    model = str(_model_file(model, preprocessing))
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
    if explain:
        frame = _explained(frame, network, patients.x, fitted)
    _write_predictions(frame, out)


def _write_predictions(frame: "pd.DataFrame", out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    typer.echo(f"{out}: predictions for {len(frame)} patients")


def _explained(frame: "pd.DataFrame", network: object, x: "np.ndarray",
               fitted: "CsvPreprocessing") -> "pd.DataFrame":
    """The predictions with each patient's attributions appended (``--explain``)."""
    from client.explanation_output import view_for_csv, with_explanation

    try:
        return with_explanation(frame, network, x, view_for_csv(fitted))
    except ValueError as error:
        _fail(f"--explain: {error}")


def _predict_builtin(data: Path, model: str, out: Path, *, explain: bool) -> bool:
    """``fedcare predict --data <task>:<hospital>``: a built-in hospital's test rows (False
    when --data names no built-in hospital).
    """
    from client.explanation_output import predict_builtin
    from client.explanation_source import builtin_source

    source = builtin_source(data)
    if source is None:
        return False

    if model in MODEL_CHOICES:
        _fail(f"--data {data} is a built-in hospital: give --model PATH (a run's "
              "model.keras, or a simulated hospital's ledgers/<name>.personal.keras)")
    try:
        frame = predict_builtin(Path(model), source, explain=explain)
    except ValueError as error:
        _fail(str(error))
    _write_predictions(frame, out)
    return True


MODEL_CHOICES = ("global", "personal")


def _model_file(model: str, preprocessing: Path) -> Path:
    """The model file `predict --model` names: global or personal (beside the hospital's
    preprocessing file, i.e. its ledger), else a path; exits 2 naming the file if absent.
    """
    if model not in MODEL_CHOICES:
        path = Path(model)
        if not path.is_file():
            _fail(f"--model {model}: no such model file (or give global or personal)")
        return path
    stem = preprocessing.name.removesuffix(".preprocessing.json")
    path = preprocessing.with_name(f"{stem}.{model}.keras")
    if not path.is_file():
        _fail(f"--model {model}: {path} does not exist. The hospital writes it beside its "
              "ledger when a run's final global model arrives"
              + (" (the personal model: fine-tuned on its own training rows, never sent; "
                 "deleting it loses nothing, the next run's final model trains it again)"
                 if model == "personal" else "") + "; or give --model PATH to a model.keras")
    return path


def hospital_worker(
    socket: Annotated[Path, typer.Option(
        help="Unix socket to listen on (created 0600), e.g. in the hospital's own directory; "
             "node config worker-socket names it.")],
    authkey_file: Annotated[Path | None, typer.Option(
        help="Key file (hex, 0600) the relay must prove it holds; made if absent. Default: "
             "SOCKET.authkey.")] = None,
    node_config: Annotated[Path | None, typer.Option(
        help="The SuperNode's node config file (.toml): used instead of the relayed one, so "
             "the shipped code cannot change data, ledger or budget.")] = None,
) -> None:
    """Serve this hospital's ClientApp from one long-running process (before the SuperNode).

    Loads fedcare's ClientApp (TensorFlow) once; Flower's per-message process relays each
    message here (node config worker-socket). Start it before flower-supernode. Stops on
    SIGTERM or Ctrl-C.
    """
    import logging

    from client.worker_link import default_authkey_file

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
