"""Run a federation of simulated hospitals from this process: in it, or on Flower's Ray engine.

Up to ``IN_PROCESS_MAX_HOSPITALS`` hospitals run in this process by default (no Ray start-up:
``simulations.engine.in_process_engine``, the same apps and Messages, the same model).
Larger federations, or ``engine=Engine.RAY``, run on Ray: ``run_simulation`` is Flower's
in-process entry point: the ServerApp runs in a thread of this process and the ClientApps in
Ray actors that are this process's children, so the run owns its whole process tree, needs
no ~/.flwr state and installs nothing at run time (``flwr run`` instead starts a detached
SuperLink that outlives the command and keeps state in ~/.flwr). Flower marks it deprecated
in favour of ``flwr run``; it is the one path that meets those requirements, and the flwr
version is pinned to 1.42.x so it cannot vanish underneath us.
"""

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from client.privacy import HospitalPrivacy
from common.config import RunConfig
from common.quiet import quiet_third_party, verbose_requested
from common.secagg.roster import MIN_HOSPITALS
from common.tasks import HospitalData
from simulations.engine.in_process_engine import Engine, choose_engine, run_in_process
from simulations.engine.process_tree import become_subreaper, exit_on_signals, stop_descendants

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

# No telemetry or usage reports from machines without internet; no runtime installs.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU only: skip TensorFlow's GPU probing
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
# Before TensorFlow, Flower and Ray: their start-up noise off (FEDCARE_VERBOSE=1 keeps it).
# Ray's workers inherit the environment set here, and run it first (common.quiet's
# RAY_RUNTIME_ENV_HOOK makes it their worker_process_setup_hook).
quiet_third_party()


def backend_config(num_cpus: int | None = None) -> dict[str, dict[str, Any]]:
    """Ray settings: one CPU per simulated hospital, so actors = cores, no dashboard."""
    cpus = num_cpus or os.cpu_count() or 1
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "include_dashboard": False, "logging_level": logging.ERROR,
                      # The hospitals' (workers') output only with --verbose.
                      "log_to_driver": verbose_requested()},
    }


class RosterPins(TypedDict, total=False):
    """What a simulated hospital pins of the ephemeral roster (none when the run has none)."""

    roster_path: Path
    roster_sha256: str
    signing_key_path: Path
    colluding: int


@dataclass(frozen=True, slots=True)
class SimulatedHospitalPrivacy:
    """Privacy settings of every simulated hospital: the run's budget, ledgers in the run dir.

    ``fedcare simulate`` gives its simulated hospitals their settings itself (a deployed
    hospital takes them from its own node config, never from the run config).

    Simulated hospitals seed their noise from the run seed so runs reproduce; real hospitals
    (``client.app.privacy_from_context``) draw it from the operating system's entropy.
    """

    config: RunConfig
    ledger_dir: Path

    def __call__(self, context: object, hospital: HospitalData) -> HospitalPrivacy:
        """Return the hospital's settings (the Flower context is not needed here)."""
        return HospitalPrivacy(
            mode=self.config.dp_mode,
            budget_epsilon=self.config.dp_epsilon,
            budget_delta=self.config.dp_delta,
            accountant=self.config.dp_accountant,
            ledger_path=self.ledger_dir / f"{hospital.name}.json",
            noise_seed=self.config.seed,
            # They pin the simulator's ephemeral roster and assume the c it states.
            **self._roster(hospital.name),
        )

    def _roster(self, name: str) -> RosterPins:
        if not self.config.secagg_roster_path:  # the key also proves who replies: any run
            return {}
        from common.secagg.roster import roster_from_bytes
        from simulations.engine.ephemeral_roster import ROSTER_FILE, key_path, roster_dir

        run_dir = self.ledger_dir.parent
        path = roster_dir(run_dir) / ROSTER_FILE
        data = path.read_bytes()
        return {"roster_path": path, "roster_sha256": hashlib.sha256(data).hexdigest(),
                "signing_key_path": key_path(run_dir, name),
                "colluding": roster_from_bytes(data, source=str(path)).colluders}


def with_ephemeral_roster(config: RunConfig, run_dir: Path) -> RunConfig:
    """A run without a roster of its own gets the simulator's ephemeral one.

    Secure aggregation pins it, and in every run each simulated hospital proves with its key
    which hospital its node is (``server.identity``). A run of fewer than 3 hospitals (the
    smallest roster) gets none: its nodes' first replies fix who they are, unproved.
    """
    if config.secagg_roster_path or config.hospitals < MIN_HOSPITALS:
        return config
    from common.tasks import task_for_config
    from simulations.engine.ephemeral_roster import ensure_roster, simulated_colluders

    hospitals = task_for_config(config).hospital_names(config.hospitals)
    # c >= 1 from 4 hospitals on (or t - h for a run that states h): collusion assumed.
    path, digest = ensure_roster(run_dir, hospitals, min_threshold=config.effective_threshold,
                                 colluders=simulated_colluders(config))
    return replace(config, secagg_roster_path=str(path), secagg_roster_sha256=digest)


def simulate(config: RunConfig, run_dir: Path, *,
             client_app: "ClientApp | None" = None, engine: Engine = Engine.AUTO) -> None:
    """Run `config` as a simulation, writing the run directory `run_dir`.

    Parameters
    ----------
    client_app : flwr.clientapp.ClientApp, optional
        The hospitals' app; fedcare's ClientApp unless a benchmark swaps in another (ship it
        as a ``simulations.engine.app_recipe.RecipeClientApp``: Ray pickles it with every message).
    engine : Engine
        Ray's simulation engine, this process (``simulations.engine.in_process_engine``), or
        by federation size (AUTO: in this process up to ``IN_PROCESS_MAX_HOSPITALS``).

    Raises
    ------
    server.strategy.FederationError
        When the federation cannot complete (the reason is in the message).
    """
    from client.app import build_client_app
    from server.app import build_server_app
    from simulations.engine.app_recipe import RecipeClientApp

    logging.getLogger("flwr").setLevel(logging.WARNING)
    config = with_ephemeral_roster(config, run_dir)
    # Ctrl-C or SIGTERM abandons the current round; the last checkpoint (written atomically
    # after each round) stays resumable.
    with exit_on_signals(lambda: (
            "stopping the simulation. The last completed round's checkpoint is kept: resume "
            f"with\n  fedcare simulate --resume {run_dir}")):
        server_app = build_server_app(config, run_dir)
        app = client_app or RecipeClientApp(
            build_client_app, SimulatedHospitalPrivacy(config, run_dir / "ledgers"))
        if choose_engine(engine, config.hospitals) is Engine.IN_PROCESS:
            run_in_process(server_app, app, hospitals=config.hospitals)  # starts no process
        else:
            _run_on_ray(server_app, app, config.hospitals)


def _run_on_ray(server_app: "ServerApp", client_app: "ClientApp", hospitals: int) -> None:
    """Run the apps on Flower's simulation engine (Ray), one simulated node per hospital;
    every process the run started is stopped before it returns.
    """
    from flwr.simulation import run_simulation

    become_subreaper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            run_simulation(server_app=server_app, client_app=client_app,
                           num_supernodes=hospitals, backend_config=backend_config())
    finally:
        stop_descendants()
