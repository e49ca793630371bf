"""``fedcare deploy-local``: a real deployment on this machine, one process per party.

It makes the consortium's certificates and one authentication key per hospital (or takes them
from ``--certs``), starts ``flower-superlink`` with TLS and SuperNode authentication, registers
each hospital's public key through Flower's Control API (``flwr supernode register``: Flower
1.42 dropped ``--auth-list-public-keys``), starts one ``flower-supernode`` per hospital with
the CA certificate, its private key and its node config, submits the fedcare app with ``flwr
run`` and follows the run to its end. Before the SuperNodes it starts one hospital worker per
hospital (``fedcare hospital-worker``, ``client.worker``: fedcare's ClientApp loaded once, with
the hospital's node config file), named in the node config as ``worker-socket``, so Flower's
per-message ClientApp process only relays. Every party has a private Flower home under OUT
(nothing in ``~/.flwr`` is read or written) and nothing is installed at run time. Every process it
started is stopped at the end, on error and on Ctrl-C (``simulations.deployment.flower_processes``).
A hospital worker, fork server or SuperNode that exits is started again, logged, at most
``DeploySettings.restarts_per_minute`` times a minute each (a SuperNode after
``SUPERNODE_RESTART_DELAY_SECONDS``); meanwhile the run goes on without that hospital. The
SuperLink's exit ends the deployment.

Layout of OUT: ``bundle/`` (the app bundle, .fab) and ``app/`` (its unpacked copy, which is
what the run submits and what the hospitals' ``app-sha256`` pins), ``certs/`` (unless
``--certs``), ``flower-home/`` (the admin's, with the connection ``fedcare`` in
``config.toml``), ``hospitals/<name>/flower-home/``, ``bin/flwr-clientapp`` (first on every
party's PATH: fedcare's lean per-message ClientApp process, ``client.clientapp_process``),
``hospitals/<name>/worker.sock`` and ``worker.authkey`` (the hospital worker's socket and key,
0600), with secure aggregation ``hospitals/<name>/signing.key`` (its roster signing key, 0600;
``signing.key.pub`` beside it) and ``hospitals/<name>/roster.json`` (its copy of the roster),
and ``roster.json`` (the server's copy), ``nodes/<name>.toml``
(each hospital's node config), ``ledgers/<name>.json``, ``run-config.toml``, ``run/`` (the run
directory: metrics.csv, model.keras, report.md), ``logs/`` (one log per process), and for task
csv ``data/`` (example hospitals, unless ``--data``).
"""

import csv
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.signals import raising_on_signals
from simulations.deployment.flower_processes import (
    MARKER_VARIABLE,
    ProcessSet,
    StartedProcess,
)

logger = logging.getLogger(__name__)

CONNECTION = "fedcare"  # the SuperLink connection's name in the admin's FLWR_HOME/config.toml
LOCAL_HOST = "127.0.0.1"
CSV_TASK = "csv"
# Environment of every Flower process: no telemetry, no update check, nothing installed.
# FLWR_SUPEREXEC_TASK_POLL_INTERVAL (seconds, flwr/supercore/superexec/run_superexec.py) is how
# often a SuperExec asks its SuperNode/SuperLink for a new task to launch (default 1.0); each
# ask is an HTTP request, so 0.25 s trims up to 0.75 s per exchange at a few % of a core each.
FLOWER_ENVIRONMENT = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.25",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "CUDA_VISIBLE_DEVICES": "",
}
SUPERLINK_READY_SECONDS = 60.0
# A hospital worker, fork server or SuperNode that exits is started again (a hospital's own
# supervisor would do it: docs/hospital-it.md); the SuperLink is the run, and is not.
NOT_RESTARTED = frozenset({"superlink"})
# Flower 1.42's SuperLink counts a SuperNode online for 2 heartbeats of 30 s after the last one
# (HEARTBEAT_PATIENCE x HEARTBEAT_DEFAULT_INTERVAL) and refuses to activate its key again
# until then: a SuperNode restarted sooner exits (code 305).
SUPERNODE_RESTART_DELAY_SECONDS = 65.0
WORKERS_READY_SECONDS = 180.0  # each worker imports TensorFlow once (seconds of CPU each)
NODES_ONLINE_SECONDS = 120.0
STATUS_POLL_SECONDS = 10.0  # each `flwr ls` is a Python start-up: poll it sparingly
FINISHING_POLL_SECONDS = 1.0  # ... but often once the ServerApp wrote report.md, its last file
FLWR_CLI_TIMEOUT_SECONDS = 120.0


class DeploymentError(RuntimeError):
    """The deployment could not start, or its run did not complete (the message says why)."""


class DeploymentInterrupted(DeploymentError):
    """Ctrl-C or SIGTERM reached deploy-local; every process it started is being stopped."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.exit_code = 128 + signal.Signals[signal_name].value  # 130 for SIGINT, 143 SIGTERM


@dataclass(frozen=True, slots=True)
class DeploySettings:
    """What to deploy: `hospitals` SuperNodes running `rounds` rounds of `task` into `out`."""

    hospitals: int
    task: str
    rounds: int
    out: Path
    app_dir: Path
    certs: Path | None = None
    data: Path | None = None
    insecure: bool = False
    seed: int = 0
    dp_mode: str = "patient"
    budget_epsilon: float = 1.0
    budget_delta: float = 1e-5
    pin_app: bool = True
    hospital_workers: bool = True
    timeout_seconds: float = 1800.0
    secure_aggregation: bool = False
    lean_clientapp: bool = True
    fork_server: bool = True  # with lean_clientapp: a ClientApp fork server per hospital
    idle_poll_seconds: float | None = 0.25  # fedcare-supernode's idle poll; None: Flower's 3 s
    extra_run_config: dict[str, Any] = field(default_factory=dict)
    force: bool = False  # a used --out: keep its certificates, keys and ledgers; new run dir
    restarts_per_minute: int = 3  # per hospital process that exits; 0: an exit ends the run

    @property
    def uses_secure_aggregation(self) -> bool:
        """Whether the run aggregates securely (``secure_aggregation`` or secagg.enabled)."""
        return self.secure_aggregation or self.extra_run_config.get("secagg.enabled") is True


@dataclass(frozen=True, slots=True)
class DeployLayout:
    """Where everything goes under OUT (see the module docstring)."""

    out: Path

    @property
    def certs(self) -> Path:
        """Certificates and hospital keys made by deploy-local."""
        return self.out / "certs"

    @property
    def flower_home(self) -> Path:
        """The admin's FLWR_HOME (SuperLink's working directory, config.toml)."""
        return self.out / "flower-home"

    @property
    def run_dir(self) -> Path:
        """The run directory the ServerApp writes (run config out-dir)."""
        return self.out / "run"

    @property
    def ledgers(self) -> Path:
        """The hospitals' privacy ledgers."""
        return self.out / "ledgers"

    @property
    def logs(self) -> Path:
        """One log file per started process."""
        return self.out / "logs"

    @property
    def nodes(self) -> Path:
        """Each hospital's node config file."""
        return self.out / "nodes"

    @property
    def data(self) -> Path:
        """Task csv: the example hospitals' schema and CSV files."""
        return self.out / "data"

    @property
    def run_config(self) -> Path:
        """The run config file ``flwr run`` submits."""
        return self.out / "run-config.toml"

    @property
    def bin(self) -> Path:
        """Put first on every party's PATH: ``flwr-clientapp``, fedcare's lean entry point."""
        return self.out / "bin"

    @property
    def bundle(self) -> Path:
        """The app bundle (.fab) built once."""
        return self.out / "bundle"

    @property
    def app(self) -> Path:
        """The unpacked bundle: what the run submits and the hospitals pin."""
        return self.out / "app"

    def hospital_dir(self, name: str) -> Path:
        """Hospital `name`'s own directory (its Flower home, its worker's socket and key)."""
        return self.out / "hospitals" / name

    def hospital_home(self, name: str) -> Path:
        """Hospital `name`'s own FLWR_HOME (its SuperNode's working directory)."""
        return self.hospital_dir(name) / "flower-home"

    @property
    def roster(self) -> Path:
        """The server's copy of the consortium roster (run config secagg.roster-path)."""
        return self.out / "roster.json"

    def hospital_roster(self, name: str) -> Path:
        """Hospital `name`'s own copy of the roster (its node config roster-path)."""
        return self.hospital_dir(name) / "roster.json"

    def signing_key(self, name: str) -> Path:
        """Hospital `name`'s roster signing key, 0600 (its node config signing-key-path)."""
        return self.hospital_dir(name) / "signing.key"

    def worker_files(self, name: str) -> tuple[Path, Path]:
        """Hospital `name`'s worker: (Unix socket, key file)."""
        return (self.hospital_dir(name) / "worker.sock",
                self.hospital_dir(name) / "worker.authkey")


@dataclass(frozen=True, slots=True)
class Credentials:
    """TLS and authentication files: None everywhere with --insecure."""

    ca_crt: Path | None
    server_crt: Path | None
    server_key: Path | None
    hospital_keys: dict[str, tuple[Path, Path]]  # name -> (private key, public key)


@dataclass(frozen=True, slots=True)
class RosterFiles:
    """The consortium roster deploy-local made: its digest, copies and the signing keys."""

    sha256: str
    server_copy: Path
    hospital_copies: dict[str, Path]  # name -> that hospital's copy
    signing_keys: dict[str, Path]  # name -> that hospital's private signing key
    colluders: int = 0  # the roster's c: each hospital states it as its own minimum


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A finished run: its id, Flower's final status and the run directory."""

    run_id: str
    status: str
    run_dir: Path
    rounds_completed: int


# ----------------------------------------------------------------------------- pure helpers


def hospital_names(task: str, hospitals: int) -> list[str]:
    """Names of the deployment's hospitals: the task's own (heart-disease's four cities) or
    ``hospital-<i>`` (task csv, as ``write_example_hospitals`` names its files).
    """
    if task == CSV_TASK:
        return [f"hospital-{index}" for index in range(hospitals)]
    from common.tasks import get_task

    return get_task(task).hospital_names(hospitals)


def toml_value(value: object) -> str:
    """One TOML value: bool, int, float or string (JSON's string syntax is TOML's basic string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"no TOML form for {value!r} ({type(value).__name__})")


def toml_document(values: dict[str, object]) -> str:
    """A flat TOML document, one ``"key" = value`` line per entry (dotted keys kept whole).

    Flower flattens nested tables to dotted keys; a quoted dotted key is the same flat key.
    """
    return "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in values.items())


def flower_config_toml(address: str, root_certificates: Path | None) -> str:
    """The admin's ``FLWR_HOME/config.toml``: one SuperLink connection, ``fedcare``, the default."""
    lines = ["[superlink]", f"default = {json.dumps(CONNECTION)}", "",
             f"[superlink.{CONNECTION}]", f"address = {json.dumps(address)}"]
    if root_certificates is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(root_certificates.resolve()))}")
    return "\n".join(lines) + "\n"


def superlink_argv(bin_dir: Path, *, port: int, credentials: Credentials) -> list[str]:
    """``flower-superlink`` on `port` of this host (Control, Fleet and Runtime APIs share it)."""
    argv = [str(bin_dir / "flower-superlink"), "--host", LOCAL_HOST, "--port", str(port),
            "--isolation", "subprocess", "--disable-runtime-dependency-installation"]
    if credentials.server_crt is None:
        return [*argv, "--insecure"]
    return [*argv, "--ssl-ca-certfile", str(credentials.ca_crt),
            "--ssl-certfile", str(credentials.server_crt),
            "--ssl-keyfile", str(credentials.server_key), "--enable-supernode-auth"]


def supernode_argv(bin_dir: Path, *, superlink: str, runtime_port: int, node_config: Path,
                   ca_crt: Path | None, private_key: Path | None) -> list[str]:
    """``flower-supernode`` dialling `superlink`; its own Runtime API on `runtime_port`."""
    argv = [str(bin_dir / "flower-supernode"), "--superlink", superlink,
            "--host", LOCAL_HOST, "--port", str(runtime_port),
            "--isolation", "subprocess", "--node-config", str(node_config)]
    if ca_crt is None:
        return [*argv, "--insecure"]
    argv += ["--root-certificates", str(ca_crt)]
    if private_key is not None:
        argv += ["--auth-supernode-private-key", str(private_key)]
    return argv


def node_config(settings: DeploySettings, layout: DeployLayout, index: int, name: str, *,
                data_path: Path | None, schema_path: Path | None,
                app_sha256: str | None, roster: RosterFiles | None = None) -> dict[str, object]:
    """Hospital `index`'s node config (keys documented in docs/hospital-it.md#node-config-keys).

    With ``settings.hospital_workers`` it names the hospital's worker (``worker-socket``,
    ``worker-authkey-file``); with a `roster`, the hospital's copy of it, its digest and the
    hospital's signing key (``roster-path``, ``roster-sha256``, ``signing-key-path``) and the
    roster's c as the hospital's own minimum (``colluding-hospitals``: it refuses a roster
    with fewer).
    """
    config: dict[str, object] = {
        "partition-id": index,
        "num-partitions": settings.hospitals,
        "hospital-name": name,
        # Every privacy key explicit: a hospital never falls back on anything the server sends.
        "dp-mode": settings.dp_mode,
        "accountant": "rdp",
        "ledger-path": str((layout.ledgers / f"{name}.json").resolve()),
        # The head apart from ledgers/ (in the hospital's own directory): deleting or
        # restoring the ledgers directory is then refused, not a fresh budget.
        "ledger-head-path": str((layout.hospital_dir(name) / "ledger.head").resolve()),
        "budget-epsilon": float(settings.budget_epsilon),
        "budget-delta": float(settings.budget_delta),
    }
    if data_path is not None:
        config["data-path"] = str(data_path.resolve())
    if schema_path is not None:
        config["schema-path"] = str(schema_path.resolve())
    if app_sha256:
        config["app-sha256"] = app_sha256
    if settings.hospital_workers:
        socket_path, key_file = layout.worker_files(name)
        config["worker-socket"] = str(socket_path.resolve())
        config["worker-authkey-file"] = str(key_file.resolve())
    if roster is not None:
        config["roster-path"] = str(roster.hospital_copies[name].resolve())
        config["roster-sha256"] = roster.sha256
        config["signing-key-path"] = str(roster.signing_keys[name].resolve())
        config["colluding-hospitals"] = roster.colluders
    return config


def deployed_colluders(hospitals: int, *, threshold: int, honest: int | None) -> int:
    """Return the c deploy-local's roster assumes, within 0 <= c < t.

    t - h if the run states h, else ``default_colluders`` (1 from 4 hospitals on).
    """
    from common.secagg.roster import default_colluders

    c = threshold - honest if honest else default_colluders(hospitals)
    return max(0, min(c, threshold - 1))


def prepare_roster(layout: DeployLayout, names: list[str], *, threshold: int,
                   honest: int | None = None, reuse: bool = False) -> RosterFiles:
    """Make each hospital's signing key and the roster of `names` (min threshold t).

    Collusion is assumed: c = ``deployed_colluders`` (1 from 4 hospitals on, or t - h when
    the run states h), so the server's distributed noise divides by h = t - c.

    Every hospital gets its own signing key (0600) and its own copy of the roster in its
    directory; the server's copy is ``layout.roster``. As ``fedcare roster key`` and ``fedcare
    roster build`` do by hand; here one admin makes every key, which is only right on one
    machine.

    Parameters
    ----------
    layout
        Where the files go.
    names
        The hospitals' names in the run (``hospital_names``), in roster order.
    threshold
        The run's effective secure-aggregation threshold t: the roster's min threshold.
    honest
        The run's explicit h (secagg.honest-contributors), or None (h = t - c per round).
    reuse
        ``--force`` on a used OUT: keep the signing keys already there (the roster is rebuilt
        from them).

    Raises
    ------
    DeploymentError
        If the roster cannot be built from the run's names and threshold, or a key file exists
        (without ``reuse``).
    """
    from client.roster_cli import (
        SigningKeyFiles,
        create_signing_key,
        fingerprint,
        public_key_path,
        read_public_key,
        write_roster,
    )
    from common.secagg.roster import build_roster

    keys = {}
    try:
        for name in names:
            layout.hospital_dir(name).mkdir(mode=0o700, parents=True, exist_ok=True)
            path = layout.signing_key(name)
            pub = public_key_path(path)
            keys[name] = (SigningKeyFiles(path, pub, fingerprint(read_public_key(pub)))
                          if reuse and path.is_file() and pub.is_file()
                          else create_signing_key(path))
        colluders = deployed_colluders(len(names), threshold=threshold, honest=honest)
        roster = build_roster(names, [read_public_key(files.public_key)
                                      for files in keys.values()], colluders, threshold, honest,
                              built_by="fedcare deploy-local")
        write_roster(roster, layout.roster, force=reuse)
        for name in names:
            write_roster(roster, layout.hospital_roster(name), force=reuse)
    except (ValueError, FileExistsError) as error:
        raise DeploymentError(f"cannot make the consortium roster: {error}") from None
    return RosterFiles(sha256=roster.hex_digest, server_copy=layout.roster,
                       hospital_copies={name: layout.hospital_roster(name) for name in names},
                       signing_keys={name: files.private_key for name, files in keys.items()},
                       colluders=roster.colluders)


def create_ledgers(node_configs: dict[str, dict[str, object]]) -> None:
    """Make each hospital's ledger with its budget (``fedcare budget init`` does it by hand).

    A configured ledger that is missing is a refusal, never a fresh budget, so deploy-local
    makes its hospitals' ledgers before they start; an existing one (``--out`` reused) is kept.
    """
    from common.dp.ledger import PrivacyLedger
    from common.wire.modes import AccountantName

    for name, config in node_configs.items():
        path, head = Path(str(config["ledger-path"])), Path(str(config["ledger-head-path"]))
        if not path.exists():
            PrivacyLedger.create(
                path, hospital=name,
                budget_epsilon=float(config["budget-epsilon"]),  # type: ignore[arg-type]
                budget_delta=float(config["budget-delta"]),  # type: ignore[arg-type]
                accountant=AccountantName.RDP, head_path=head)


def worker_argv(bin_dir: Path, *, socket_path: Path, key_file: Path,
                node_config_file: Path) -> list[str]:
    """``fedcare hospital-worker`` serving on `socket_path` with the hospital's node config."""
    return [str(bin_dir / "fedcare"), "hospital-worker", "--socket", str(socket_path),
            "--authkey-file", str(key_file), "--node-config", str(node_config_file)]


def run_config(settings: DeploySettings, layout: DeployLayout, *,
               schema_path: Path | None, schema_sha256: str | None,
               roster: RosterFiles | None = None) -> dict[str, object]:
    """The run config ``flwr run`` submits (keys of pyproject's [tool.flwr.app.config]).

    With ``settings.secure_aggregation`` it turns on secagg.enabled; with a `roster`, it names
    the server's copy and its digest (secagg.roster-path, secagg.roster-sha256).
    """
    config: dict[str, object] = {
        "task": settings.task,
        "num-server-rounds": settings.rounds,
        "hospitals": settings.hospitals,
        "seed": settings.seed,
        "dp.mode": settings.dp_mode,
        "out-dir": str(layout.run_dir.resolve()),
    }
    if schema_path is not None:
        config["csv.schema-path"] = str(schema_path.resolve())
        config["csv.schema-sha256"] = str(schema_sha256)
    if settings.secure_aggregation:
        config["secagg.enabled"] = True
    config.update(settings.extra_run_config)
    if roster is not None:
        config["secagg.roster-path"] = str(roster.server_copy.resolve())
        config["secagg.roster-sha256"] = roster.sha256
    return config


def secagg_parameters(config: dict[str, object]) -> tuple[int, int | None]:
    """The run's (t, explicit h or None) for its roster, as ``RunConfig`` reads them.

    Raises
    ------
    DeploymentError
        If the run config is invalid (naming the key).
    """
    from common.config import RunConfig

    try:
        parsed = RunConfig.from_run_config(config)
    except ValueError as error:
        raise DeploymentError(f"invalid run config: {error}") from None
    return parsed.effective_threshold, parsed.secagg_honest_contributors or None


def parse_flwr_json(stdout: str) -> dict[str, Any]:
    """The JSON object a ``flwr ... --format json`` command printed (after any banner text).

    Raises
    ------
    DeploymentError
        If there is no JSON object in `stdout`.
    """
    start = stdout.find("{")
    if start < 0:
        raise DeploymentError(f"flwr printed no JSON: {stdout.strip()[-2000:]!r}")
    try:
        return json.loads(stdout[start:])
    except json.JSONDecodeError as error:
        raise DeploymentError(
            f"flwr printed unreadable JSON ({error}): {stdout[-2000:]!r}") from None


def run_status(listing: dict[str, Any], run_id: str) -> tuple[str, str]:
    """(status, details) of `run_id` in a ``flwr ls --run-id ID --format json`` payload."""
    for run in listing.get("runs", []):
        if str(run.get("run-id")) == str(run_id):
            return str(run.get("status", "")), str(run.get("status-details", ""))
    raise DeploymentError(f"run {run_id} is not in the SuperLink's run list: {listing}")


def online_nodes(listing: dict[str, Any]) -> int:
    """How many SuperNodes a ``flwr supernode ls --format json`` payload lists as online."""
    return sum(1 for node in listing.get("nodes", []) if node.get("status") == "online")


def completed_rounds(run_dir: Path) -> list[dict[str, str]]:
    """The metrics.csv rows written so far (empty before the first round ends)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that are free on this host now (held open together)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOCAL_HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def check_out_dir(out: Path, app_dir: Path, *, force: bool = False) -> None:
    """Refuse an OUT that is not empty (unless ``force``), or that sits in the app directory
    outside ``runs/``.

    OUT holds Flower homes with installed copies of the app: inside the app directory they
    would be packed into the next app bundle, unless git-ignored (``runs/`` is).

    Raises
    ------
    DeploymentError
        Naming the directory and the rule.
    """
    out, app_dir = out.resolve(), app_dir.resolve()
    if out.exists() and not out.is_dir():
        raise DeploymentError(f"--out {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise DeploymentError(f"--out {out} exists and is not empty; choose another directory "
                              "or pass --force")
    if out.is_relative_to(app_dir) and not out.is_relative_to(app_dir / "runs"):
        raise DeploymentError(
            f"--out {out} is inside the app directory {app_dir}: Flower would pack it into "
            f"the app bundle; use a directory under {app_dir / 'runs'} or outside it")


# ----------------------------------------------------------------------------- preparation


def set_aside_previous_run(layout: DeployLayout, report: Callable[[str], None]) -> None:
    """``--force`` on a used OUT: move the previous run's directory, app snapshot, bundle and
    logs into ``previous-<UTC time>/`` (kept, never deleted): the ServerApp writes only into
    an empty run directory, and a new snapshot must not mix with the old one's files.
    """
    found = [path for path in (layout.run_dir, layout.app, layout.bundle, layout.logs)
             if path.exists()]
    if not found:
        return
    kept = layout.out / f"previous-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    kept.mkdir()
    for path in found:
        path.rename(kept / path.name)
    report(f"--force: the previous run's {', '.join(p.name for p in found)} are kept in {kept}")


def prepare_credentials(settings: DeploySettings, layout: DeployLayout,
                        names: list[str]) -> Credentials:
    """Make (or find, with ``--certs``) the CA, the server certificate and the hospital keys.

    Raises
    ------
    DeploymentError
        If ``--certs`` lacks a file (named, with the command that makes it), or the server
        certificate does not name 127.0.0.1 (the address every local party dials).
    """
    if settings.insecure:
        return Credentials(None, None, None, {})
    from client.auth_keys import create_hospital_keys
    from server.certificates import create_consortium, read_certificate_info

    if settings.certs is None and not (settings.force and (layout.certs / "ca.crt").is_file()):
        files = create_consortium(layout.certs, [LOCAL_HOST, "localhost"])
        keys = {}
        for name in names:
            made = create_hospital_keys(layout.certs, name)
            keys[name] = (made.key, made.pub)
        return Credentials(files.ca_crt, files.server_crt, files.server_key, keys)
    directory = (settings.certs or layout.certs).resolve()  # --force: the used --out's own
    needed = {"ca.crt": "fedcare certs init", "server.crt": "fedcare certs init",
              "server.key": "fedcare certs init"}
    for name in names:
        needed[f"{name}.key"] = f"fedcare certs hospital {directory} {name}"
        needed[f"{name}.pub"] = f"fedcare certs hospital {directory} {name}"
    missing = [f"{directory / file} (make it with `{command}`)"
               for file, command in needed.items() if not (directory / file).is_file()]
    if missing:
        raise DeploymentError("--certs is missing: " + "; ".join(missing))
    info = read_certificate_info(directory / "server.crt")
    if LOCAL_HOST not in info.ip_addresses:
        raise DeploymentError(
            f"{directory / 'server.crt'} does not name {LOCAL_HOST} (it names "
            f"{', '.join(info.dns_names + info.ip_addresses) or 'nothing'}): make one with "
            f"`fedcare certs init DIR --server-name {LOCAL_HOST} --server-name localhost`")
    return Credentials(directory / "ca.crt", directory / "server.crt", directory / "server.key",
                       {name: (directory / f"{name}.key", directory / f"{name}.pub")
                        for name in names})


def prepare_csv_data(settings: DeploySettings, layout: DeployLayout
                     ) -> tuple[Path, list[Path], str]:
    """Task csv: (schema, one CSV per hospital, the schema's sha256).

    From ``--data DIR`` (``schema.json`` and ``hospital-<i>.csv``), else the example hospitals
    written into OUT/data.
    """
    from common.schema import DataSchema
    from common.tasks.csv_task import write_example_hospitals

    if settings.data is None:
        schema, files = write_example_hospitals(layout.data, settings.hospitals)
    else:
        schema = settings.data / "schema.json"
        files = [settings.data / f"hospital-{i}.csv" for i in range(settings.hospitals)]
        missing = [str(p) for p in [schema, *files] if not p.is_file()]
        if missing:
            raise DeploymentError(f"--data is missing: {', '.join(missing)}")
    return schema, files, DataSchema.load(schema).sha256


# ----------------------------------------------------------------------------- orchestration


LEAN_CLIENTAPP = "fedcare-clientapp"  # console script of client.clientapp_process


def install_lean_clientapp(bin_dir: Path, scripts_dir: Path) -> Path:
    """Link ``bin_dir/flwr-clientapp`` to `scripts_dir`'s ``fedcare-clientapp``; return it.

    A SuperExec starts ``flwr-clientapp`` by PATH for every message: with `bin_dir` first on
    the SuperNodes' PATH they start fedcare's lean entry point (``client.clientapp_process``).

    Raises
    ------
    DeploymentError
        If `scripts_dir` has no ``fedcare-clientapp`` (fedcare is not installed there).
    """
    target = scripts_dir / LEAN_CLIENTAPP
    if not target.is_file():
        raise DeploymentError(f"{target} not found: install fedcare (pip install -e .) in this "
                              "environment, or deploy without the lean ClientApp process")
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "flwr-clientapp"
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    return link


def interruptible() -> AbstractContextManager[None]:
    """Turn SIGINT and SIGTERM into ``DeploymentInterrupted`` (so `finally` blocks run)."""
    return raising_on_signals(DeploymentInterrupted)


@dataclass(slots=True)
class RestartLimiter:
    """Restarts per process name within the last 60 s (monotonic seconds), and in all."""

    per_minute: int
    times: dict[str, list[float]] = field(default_factory=dict)
    total: int = 0

    def allow(self, name: str, now: float) -> bool:
        """Whether `name` may be restarted at `now`; if so, count the restart."""
        recent = [t for t in self.times.get(name, []) if now - t < 60.0]
        if len(recent) >= self.per_minute:
            self.times[name] = recent
            return False
        self.times[name] = [*recent, now]
        self.total += 1
        return True

    def recent(self, name: str) -> int:
        """Restarts of `name` counted within its last minute."""
        return len(self.times.get(name, []))


class LocalDeployment:
    """The running parties of one deploy-local, and the ``flwr`` calls the admin makes."""

    def __init__(self, settings: DeploySettings, layout: DeployLayout,
                 report: Callable[[str], None]) -> None:
        self.settings, self.layout, self.report = settings, layout, report
        self.bin_dir = Path(sys.executable).parent
        path = [str(self.bin_dir), os.environ.get("PATH", "")]
        if settings.lean_clientapp:
            install_lean_clientapp(layout.bin, self.bin_dir)
            path.insert(0, str(layout.bin))
        env = {**os.environ, **FLOWER_ENVIRONMENT, "FLWR_HOME": str(layout.flower_home),
               "PATH": os.pathsep.join(path)}
        self.processes = ProcessSet(env=env, log_dir=layout.logs)
        self.restarts = RestartLimiter(settings.restarts_per_minute)
        self.restart_due: dict[str, float] = {}  # exited process name -> when to restart it
        self.supernodes: set[str] = set()  # names of the SuperNode processes

    def flwr(self, *args: str, timeout: float = FLWR_CLI_TIMEOUT_SECONDS) -> dict[str, Any]:
        """Run ``flwr ARGS --format json`` as the admin; return its JSON, raise if it failed."""
        env = {**self.processes.env, MARKER_VARIABLE: self.processes.marker}  # for stop()
        done = subprocess.run([str(self.bin_dir / "flwr"), *args, "--format", "json"],
                              cwd=self.layout.flower_home, env=env, capture_output=True,
                              text=True, timeout=timeout)
        payload = parse_flwr_json(done.stdout + "\n")
        if done.returncode != 0 or not payload.get("success", False):
            raise DeploymentError(f"`flwr {' '.join(args)}` failed: "
                                  f"{payload.get('error-message', payload)}")
        return payload

    def check_alive(self) -> None:
        """Restart a hospital worker, fork server or SuperNode that exited, logged; raise if the
        SuperLink exited or a process exited more often than its cap (naming it and its log).

        The cap is ``settings.restarts_per_minute`` restarts per process in any 60 s (0: none).
        A SuperNode is restarted ``SUPERNODE_RESTART_DELAY_SECONDS`` after its exit: until then
        the SuperLink still counts it online and refuses its key. Meanwhile the run goes on:
        the server leaves that hospital out of the rounds it misses.
        """
        now = time.monotonic()
        for process in self.processes.exited():
            if process.name in NOT_RESTARTED:
                raise DeploymentError(f"{process.name} exited with status "
                                      f"{process.popen.returncode}; last lines of "
                                      f"{process.log_path}:\n{tail(process.log_path)}")
            if process.name not in self.restart_due:
                delay = SUPERNODE_RESTART_DELAY_SECONDS if process.name in self.supernodes else 0.0
                self.restart_due[process.name] = now + delay
                if delay:
                    self.report(f"{process.name} exited with status {process.popen.returncode}; "
                                f"restarting it in {delay:.0f} s (the SuperLink counts it "
                                "online until its heartbeats lapse)")
            if now >= self.restart_due[process.name]:
                del self.restart_due[process.name]
                self.restart(process, now)

    def restart(self, process: StartedProcess, now: float) -> None:
        """Start the exited `process` again within the cap (logged), else raise naming it.

        Raises
        ------
        DeploymentError
            If `process` was restarted ``settings.restarts_per_minute`` times in the last 60 s.
        """
        status = process.popen.returncode
        if not self.restarts.allow(process.name, now):
            raise DeploymentError(
                f"{process.name} exited with status {status} (restarted "
                f"{self.settings.restarts_per_minute} times within a minute already: the cap); "
                f"last lines of {process.log_path}:\n{tail(process.log_path)}")
        restarted = self.processes.restart(process)
        message = (f"{process.name} exited with status {status}; restarted it (pid "
                   f"{restarted.popen.pid}; {self.restarts.recent(process.name)} of at most "
                   f"{self.settings.restarts_per_minute} restarts a minute)")
        logger.warning(message)
        self.report(message)

    def start_superlink(self, credentials: Credentials) -> str:
        """Start the SuperLink; return its address once it accepts connections."""
        port = free_ports(1)[0]
        home = self.layout.flower_home
        home.mkdir(parents=True, exist_ok=True)
        address = f"{LOCAL_HOST}:{port}"
        (home / "config.toml").write_text(flower_config_toml(address, credentials.ca_crt))
        self.processes.start("superlink", superlink_argv(self.bin_dir, port=port,
                                                          credentials=credentials),
                             cwd=home, extra_env={"FLWR_HOME": str(home)})
        deadline = time.monotonic() + SUPERLINK_READY_SECONDS
        while time.monotonic() < deadline:
            self.check_alive()
            with socket.socket() as probe:
                probe.settimeout(1.0)
                if probe.connect_ex((LOCAL_HOST, port)) == 0:
                    security = (" (INSECURE: no TLS)" if credentials.ca_crt is None
                                else " (TLS, SuperNode authentication)")
                    self.report(f"SuperLink listening on {address}{security}")
                    return address
            time.sleep(0.2)
        raise DeploymentError(f"the SuperLink did not listen on {address} within "
                              f"{SUPERLINK_READY_SECONDS:.0f} s; see "
                              f"{self.layout.logs / 'superlink.log'}")

    def register_hospitals(self, credentials: Credentials) -> None:
        """Register each hospital's public key with the SuperLink (Control API)."""
        for name, (_, public_key) in credentials.hospital_keys.items():
            payload = self.flwr("supernode", "register", str(public_key), CONNECTION,
                                "--name", name)
            self.report(f"registered {name} (node id {payload.get('node-id')})")

    def write_node_configs(self, node_configs: dict[str, dict[str, object]]) -> dict[str, Path]:
        """Write each hospital's node config file; return name -> file."""
        self.layout.nodes.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, config in node_configs.items():
            files[name] = self.layout.nodes / f"{name}.toml"
            files[name].write_text(toml_document(config))
        return files

    def start_workers(self, config_files: dict[str, Path]) -> list[Path]:
        """Start one hospital worker per hospital; return their sockets (to wait for).

        Raises
        ------
        DeploymentError
            If a socket path would be too long for a Unix socket.
        """
        from client.worker_link import check_socket_path

        sockets = []
        for name, config_file in config_files.items():
            socket_path, key_file = self.layout.worker_files(name)
            try:
                check_socket_path(socket_path)
            except ValueError as error:
                raise DeploymentError(f"{error} (it is under --out: choose a shorter "
                                      "--out)") from None
            self.layout.hospital_dir(name).mkdir(parents=True, exist_ok=True)
            self.processes.start(f"{name}-worker", worker_argv(
                self.bin_dir, socket_path=socket_path, key_file=key_file,
                node_config_file=config_file), cwd=self.layout.hospital_dir(name))
            sockets.append(socket_path)
        return sockets

    def wait_for_workers(self, sockets: list[Path]) -> None:
        """Wait until every worker answers a ping on its socket (each imports TensorFlow first).

        Readiness is the worker's answer through the key handshake
        (``client.worker_link.wait_for_worker``), not its socket file, which exists before
        the worker listens.

        Raises
        ------
        DeploymentError
            If a worker exits, refuses its key, or not all answer within
            ``WORKERS_READY_SECONDS`` (naming the socket and its log).
        """
        from client.worker_link import WorkerUnavailable, wait_for_worker

        if not sockets:
            return
        deadline = time.monotonic() + WORKERS_READY_SECONDS
        for socket_path in sockets:
            name = socket_path.parent.name
            key_file = self.layout.worker_files(name)[1]
            try:
                wait_for_worker(socket_path, key_file, check=self.check_alive,
                                timeout=max(0.0, deadline - time.monotonic()))
            except (WorkerUnavailable, ValueError) as error:
                raise DeploymentError(f"{error} (limit for all workers: "
                                      f"{WORKERS_READY_SECONDS:.0f} s); see "
                                      f"{self.layout.logs / (name + '-worker.log')}") from None
        self.report(f"{len(sockets)} hospital workers listening")

    def start_fork_servers(self, names: list[str]) -> dict[str, tuple[Path, Path]]:
        """Start a ClientApp fork server per hospital if the settings ask for one (name ->
        socket, key file; ``simulations.deployment.message_path``); wait for them later.
        """
        from simulations.deployment.message_path import start_fork_servers

        if not (self.settings.fork_server and self.settings.lean_clientapp):
            return {}
        try:
            return start_fork_servers(self.processes, self.bin_dir,
                                      {name: self.layout.hospital_dir(name) for name in names})
        except ValueError as error:
            raise DeploymentError(f"{error} (it is under --out: choose a shorter --out)") from None

    def wait_for_fork_servers(self, forks: dict[str, tuple[Path, Path]]) -> None:
        """Wait until every fork server answers, single-threaded (raise naming its log if not)."""
        from simulations.deployment.message_path import ForkServerError, wait_for_fork_servers

        try:
            wait_for_fork_servers(forks, check=self.check_alive)
        except ForkServerError as error:
            raise DeploymentError(f"{error}; see {self.layout.logs}") from None
        if forks:
            self.report(f"{len(forks)} ClientApp fork servers listening")

    def start_supernodes(self, superlink: str, credentials: Credentials,
                         config_files: dict[str, Path],
                         forks: dict[str, tuple[Path, Path]] | None = None) -> None:
        """Start one SuperNode per hospital, each with its own Flower home and node config
        (and its fork server named in its environment, if `forks` has one).
        """
        from simulations.deployment.message_path import fork_server_env, supernode_entry

        entry = supernode_entry(self.bin_dir, self.settings.idle_poll_seconds, self.report)
        forks = forks or {}
        ports = free_ports(len(config_files))
        for port, (name, config_file) in zip(ports, config_files.items(), strict=True):
            home = self.layout.hospital_home(name)
            home.mkdir(parents=True, exist_ok=True)
            private_key = credentials.hospital_keys.get(name, (None, None))[0]
            argv = supernode_argv(self.bin_dir, superlink=superlink, runtime_port=port,
                                  node_config=config_file, ca_crt=credentials.ca_crt,
                                  private_key=private_key)
            env = {"FLWR_HOME": str(home), **(fork_server_env(*forks[name]) if name in forks
                                              else {})}
            self.processes.start(name, [*entry, *argv[1:]], cwd=home, extra_env=env)
            self.supernodes.add(name)

    def wait_for_nodes(self, expected: int) -> None:
        """Wait until `expected` SuperNodes are online (authenticated deployments list them)."""
        deadline = time.monotonic() + NODES_ONLINE_SECONDS
        online = 0
        while time.monotonic() < deadline:
            self.check_alive()
            online = online_nodes(self.flwr("supernode", "ls", CONNECTION))
            if online >= expected:
                self.report(f"{online} SuperNodes online")
                return
            time.sleep(2.0)
        raise DeploymentError(f"only {online} of {expected} SuperNodes came online within "
                              f"{NODES_ONLINE_SECONDS:.0f} s; see the logs in {self.layout.logs}")

    def submit(self, app: Path, run_config: Path | None = None) -> str:
        """Submit the app directory `app` with the run config (or `run_config`, a file of the
        same form); return Flower's run id.
        """
        config = run_config if run_config is not None else self.layout.run_config
        payload = self.flwr("run", str(app.resolve()), CONNECTION,
                            "--run-config", str(config.resolve()))
        return str(payload["run-id"])

    def follow(self, run_id: str, on_round: Callable[[list[dict[str, str]]], None]) -> str:
        """Wait (bounded) until the run finishes; return its final status.

        `on_round` gets the metrics.csv rows whenever a round was added. Flower's status is
        asked every STATUS_POLL_SECONDS, and every FINISHING_POLL_SECONDS once the run
        directory holds report.md (the ServerApp's last file: the run is ending).
        """
        deadline = time.monotonic() + self.settings.timeout_seconds
        last_status, seen, status, details = -math.inf, 0, "", ""
        while time.monotonic() < deadline:
            self.check_alive()
            rows = completed_rounds(self.layout.run_dir)
            if len(rows) > seen:
                seen = len(rows)
                on_round(rows)
            ending = (self.layout.run_dir / "report.md").is_file()
            interval = FINISHING_POLL_SECONDS if ending else STATUS_POLL_SECONDS
            if time.monotonic() >= last_status + interval:
                last_status = time.monotonic()
                status, details = run_status(self.flwr("ls", CONNECTION, "--run-id", run_id),
                                             run_id)
                if status.startswith("finished"):
                    on_round(completed_rounds(self.layout.run_dir))
                    break
            time.sleep(1.0 if not ending else 0.25)
        else:
            raise DeploymentError(
                f"run {run_id} did not finish within {self.settings.timeout_seconds:.0f} s "
                f"(status {status or 'unknown'}); see {self.layout.logs / 'superlink.log'}")
        if status != "finished:completed":
            raise DeploymentError(
                f"run {run_id} ended {status}: {details}\nlast lines of the SuperLink's log "
                f"(the ServerApp's output):\n{tail(self.layout.logs / 'superlink.log')}")
        return status


def snapshot_app(app_dir: Path, layout: DeployLayout, env: dict[str, str]) -> Path:
    """Build the app bundle once (``flwr build``) and unpack it into OUT/app; return that.

    The run submits OUT/app, so the code the hospitals pin (its digest) is exactly the code
    they receive, even if the checkout changes meanwhile; OUT/bundle keeps the .fab file.
    ``flwr build`` reads a copy of the files it would take (``stage_app_sources``: it would
    otherwise read every file of a .venv inside the app directory first).

    Raises
    ------
    DeploymentError
        If ``flwr build`` fails (with its output).
    """
    from simulations.deployment.app_sources import stage_app_sources

    layout.bundle.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedcare-app-") as scratch:
        stage = stage_app_sources(app_dir.resolve(), Path(scratch) / app_dir.resolve().name)
        built = subprocess.run([str(Path(sys.executable).parent / "flwr"), "build", "--app",
                                str(stage)], cwd=layout.bundle, env=env, capture_output=True,
                               text=True, timeout=FLWR_CLI_TIMEOUT_SECONDS)
    bundles = sorted(layout.bundle.glob("*.fab"))
    if built.returncode != 0 or len(bundles) != 1:
        raise DeploymentError(f"`flwr build --app {app_dir}` failed:\n{built.stdout}{built.stderr}")
    with zipfile.ZipFile(bundles[0]) as bundle:
        members = [m for m in bundle.namelist() if not m.startswith(".info/")]
        bundle.extractall(layout.app, members=members)
    return layout.app


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log, without HTTP access lines ("" if unreadable)."""
    try:
        text = path.read_text(errors="replace").splitlines()
        return "\n".join([line for line in text if "HTTP/1.1" not in line][-lines:])
    except OSError:
        return ""


Follower = Callable[["LocalDeployment", Path, str], str]


def deploy_local(settings: DeploySettings, *, report: Callable[[str], None] = logger.info,
                 on_round: Callable[[list[dict[str, str]]], None] = lambda rows: None,
                 follower: Follower | None = None) -> RunOutcome:
    """Run the whole local deployment (see the module docstring); stop every process after.

    `follower(deployment, app, run_id)`, if given, follows the submitted run instead of
    ``LocalDeployment.follow`` and returns its final status (a soak's chaos loop, which may
    submit the run again with resume=true).

    Raises
    ------
    DeploymentError
        If a party fails to start, the run fails or times out, or the run is interrupted; all
        started processes are stopped before it propagates.
    """
    from common.config import RunConfig

    layout = DeployLayout(settings.out.resolve())
    check_out_dir(layout.out, settings.app_dir, force=settings.force)
    set_aside_previous_run(layout, report)
    names = hospital_names(settings.task, settings.hospitals)
    layout.out.mkdir(parents=True, exist_ok=True)
    schema_path = schema_sha256 = None
    data_files: list[Path | None] = [None] * settings.hospitals
    if settings.task == CSV_TASK:
        schema_path, csv_files, schema_sha256 = prepare_csv_data(settings, layout)
        data_files = list(csv_files)
    config = run_config(settings, layout, schema_path=schema_path, schema_sha256=schema_sha256)
    roster = None
    if settings.uses_secure_aggregation:
        threshold, honest = secagg_parameters(config)
        roster = prepare_roster(layout, names, threshold=threshold, honest=honest,
                                reuse=settings.force)
        report(f"consortium roster {layout.roster}: sha256 {roster.sha256}")
        config = run_config(settings, layout, schema_path=schema_path,
                            schema_sha256=schema_sha256, roster=roster)
    try:
        RunConfig.from_run_config(config)
    except ValueError as error:
        raise DeploymentError(f"invalid run config: {error}") from None
    layout.run_config.write_text(toml_document(config))
    credentials = prepare_credentials(settings, layout, names)
    deployment = LocalDeployment(settings, layout, report)
    app = snapshot_app(settings.app_dir, layout, deployment.processes.env)
    digest = None
    if settings.pin_app:
        from client.app_pinning import app_digest

        digest = app_digest(app)
    node_configs = {
        name: node_config(settings, layout, index, name, data_path=data_files[index],
                          schema_path=schema_path, app_sha256=digest, roster=roster)
        for index, name in enumerate(names)}
    create_ledgers(node_configs)
    with interruptible():
        try:
            config_files = deployment.write_node_configs(node_configs)
            sockets = (deployment.start_workers(config_files) if settings.hospital_workers
                       else [])
            forks = deployment.start_fork_servers(names)
            superlink = deployment.start_superlink(credentials)
            if not settings.insecure:
                deployment.register_hospitals(credentials)
            deployment.wait_for_workers(sockets)
            deployment.wait_for_fork_servers(forks)
            deployment.start_supernodes(superlink, credentials, config_files, forks)
            if not settings.insecure:
                deployment.wait_for_nodes(settings.hospitals)
            run_id = deployment.submit(app)
            report(f"submitted run {run_id}; the run directory is {layout.run_dir}")
            status = (follower(deployment, app, run_id) if follower is not None
                      else deployment.follow(run_id, on_round))
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
            survivors = deployment.processes.stop()
            if survivors:
                logger.error("processes still running after SIGKILL: %s", survivors)
    return RunOutcome(run_id=run_id, status=status, run_dir=layout.run_dir,
                      rounds_completed=len(completed_rounds(layout.run_dir)))
