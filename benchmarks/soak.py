"""Soak: ``deploy-local`` with 4 hospitals for 200 rounds while a chaos loop kills its parties.

Not part of the test command (it takes 30-40 minutes on 2 cores). From a checkout::

    python -m benchmarks.soak --out runs/soak --rounds 200

It deploys heart-disease with patient-level DP (each hospital's budget ``--epsilon``, large
enough for the rounds) as ``fedcare deploy-local`` does (real SuperLink, SuperNodes, hospital
workers, TLS, node authentication), with deploy-local's supervisor on (a hospital worker,
fork server or SuperNode that exits is restarted, at most 3 times a minute each). Every
``--kill-every`` completed rounds (a random 1 more or less) the chaos loop SIGKILLs, by pid,
one of: a random hospital's worker, a random hospital's SuperNode, or the server (the
ServerApp process; the run is then stopped with ``flwr stop`` and submitted again with
``resume=true``, as a consortium admin would: it continues from its last checkpoint under the
same fedcare run id).

At the end, with every process stopped, it checks and prints as figures:

- rounds: every round number 1..R in metrics.csv exactly once (lost, doubled);
- ledgers: every (run, round, track) at most once in each hospital's ledger (doubled), and
  every update the server counted in a round has its hospital's charge for that round (lost:
  per round, participants minus the hospitals whose ledger charged it); charges of updates
  the server did not count (a hospital killed after its charge, before its reply) are shown;
- epsilon: each hospital's recorded patient-level epsilon against Opacus's RDPAccountant
  stepped through its ledger's training entries, and against its budget;
- the final model.keras loads; no process of the deployment is left running;
- kills by kind, restarts by the supervisor, resubmissions, wall time.

It exits 0 when every check holds, 1 otherwise.
"""

import argparse
import json
import math
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from simulations.deployment.deploy_local import (
    CONNECTION,
    DeploymentError,
    DeploySettings,
    LocalDeployment,
    completed_rounds,
    deploy_local,
    hospital_names,
    run_status,
    toml_document,
)
from simulations.deployment.flower_processes import MARKER_VARIABLE

STATUS_SECONDS = 5.0
KINDS = ("worker", "supernode", "server")
MAX_UNEXPECTED_ENDS = 3  # resubmissions of a run that ended without a kill, then give up


@dataclass
class Chaos:
    """The chaos loop: follows the run, kills a party every few rounds, resubmits the run."""

    rounds: int
    names: list[str]
    kill_every: int
    timeout: float
    rng: random.Random
    kills: Counter[str] = field(default_factory=Counter)
    resubmissions: int = 0
    unexpected_ends: int = 0  # the run ended (failed or stopped) though nothing was killed
    marker: str = ""
    log: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        """Print and keep one line of the chaos log."""
        line = f"[soak {time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        self.log.append(line)

    def next_gap(self) -> int:
        """Rounds until the next kill: ``kill_every`` plus or minus 1 (at least 1)."""
        return max(1, self.kill_every + self.rng.randint(-1, 1))

    def server_process(self) -> psutil.Process | None:
        """The running ServerApp process of this deployment (a ``flwr-serverapp``), if any."""
        for process in psutil.process_iter(["cmdline"]):
            try:
                cmdline = " ".join(process.info["cmdline"] or [])
                if ("flwr-serverapp" in cmdline
                        and process.environ().get(MARKER_VARIABLE) == self.marker):
                    return process
            except (psutil.Error, OSError):
                continue
        return None

    def kill_one(self, deployment: LocalDeployment, done: int) -> str | None:
        """SIGKILL one random party (by the pid this deployment started); return its kind.

        The first kill is a SuperNode's (its restart waits longest: a fault there shows early).
        """
        kind = self.rng.choice(KINDS) if self.kills else "supernode"
        if kind == "server":
            server = self.server_process()
            if server is None:
                kind = "worker"
            else:
                os.kill(server.pid, signal.SIGKILL)
                self.kills[kind] += 1
                self.say(f"after round {done}: killed the ServerApp (pid {server.pid})")
                return kind
        hospital = self.rng.choice(self.names)
        name = f"{hospital}-worker" if kind == "worker" else hospital
        for started in deployment.processes.started:
            if started.name == name and started.popen.poll() is None:
                os.kill(started.popen.pid, signal.SIGKILL)
                self.kills[kind] += 1
                self.say(f"after round {done}: killed {name} (pid {started.popen.pid})")
                return kind
        return None

    def resubmit(self, deployment: LocalDeployment, app: Path, run_id: str) -> str:
        """Stop Flower's run `run_id` (its ServerApp is dead) and submit it again with
        resume=true; return the new Flower run id.
        """
        try:
            deployment.flwr("stop", run_id, CONNECTION)
        except DeploymentError as error:
            self.say(f"flwr stop {run_id}: {error} (going on)")
        config = deployment.layout.out / "run-config-resume.toml"
        values = tomllib_load(deployment.layout.run_config)
        config.write_text(toml_document({**values, "resume": True}))
        new_id = deployment.submit(app, config)
        self.resubmissions += 1
        self.say(f"submitted the run again with resume=true: Flower run {new_id}")
        return new_id

    def follow(self, deployment: LocalDeployment, app: Path, run_id: str) -> str:
        """Follow the run to its end, killing a party every few rounds; return the status."""
        self.marker = deployment.processes.marker
        deadline = time.monotonic() + self.timeout
        next_kill, next_status, server_killed = self.next_gap(), 0.0, False
        while time.monotonic() < deadline:
            deployment.check_alive()  # restarts what exited, within the cap
            done = len(completed_rounds(deployment.layout.run_dir))
            if done >= next_kill and done < self.rounds and not server_killed:
                server_killed = self.kill_one(deployment, done) == "server"
                next_kill = done + self.next_gap()
            if time.monotonic() >= next_status or server_killed:
                status, details = run_status(deployment.flwr("ls", CONNECTION, "--run-id",
                                                             run_id), run_id)
                if status == "finished:completed":
                    return status
                if status.startswith("finished") or server_killed:
                    if not server_killed:
                        self.unexpected_ends += 1
                        self.say(f"run {run_id} ended {status} ({details}) without a kill")
                        if self.unexpected_ends > MAX_UNEXPECTED_ENDS:
                            raise DeploymentError(f"the run ended {self.unexpected_ends} times "
                                                  "without a kill; see the logs")
                    run_id, server_killed = self.resubmit(deployment, app, run_id), False
                next_status = time.monotonic() + STATUS_SECONDS
            time.sleep(0.5)
        raise DeploymentError(f"the soak did not finish within {self.timeout:.0f} s")


def tomllib_load(path: Path) -> dict[str, Any]:
    """A TOML file's values (the run config deploy-local wrote)."""
    import tomllib

    return tomllib.loads(path.read_text())


def opacus_epsilon(ledger: dict[str, Any]) -> float:
    """Patient-level epsilon of a ledger's training entries, by Opacus's RDPAccountant."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for entry in ledger["entries"]:
        if entry.get("track", "training") != "training":
            continue
        for _ in range(entry["steps"]):
            accountant.step(noise_multiplier=entry["noise_multiplier"],
                            sample_rate=entry["sample_rate"])
    return float(accountant.get_epsilon(delta=ledger["budget"]["delta"]))


def round_figures(rows: list[dict[str, str]], rounds: int) -> dict[str, int]:
    """Rounds completed, lost (missing from 1..R) and doubled (listed more than once)."""
    seen = Counter(int(row["round"]) for row in rows)
    return {"rounds_completed": len(seen),
            "rounds_lost": sum(1 for r in range(1, rounds + 1) if r not in seen),
            "rounds_doubled": sum(count - 1 for count in seen.values() if count > 1)}


def ledger_figures(out: Path, names: list[str], rows: list[dict[str, str]]
                   ) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """Lost and doubled ledger entries, and each hospital's epsilon figures."""
    ledgers = {name: json.loads((out / "ledgers" / f"{name}.json").read_text())
               for name in names}
    runs = {entry["run"] for ledger in ledgers.values() for entry in ledger["entries"]}
    charged: dict[str, set[int]] = {}
    doubled = 0
    per_hospital: dict[str, dict[str, Any]] = {}
    for name, ledger in ledgers.items():
        keys = Counter((e["run"], e["round"], e.get("track", "training"))
                       for e in ledger["entries"] + ledger.get("test_entries", []))
        doubled += sum(count - 1 for count in keys.values() if count > 1)
        charged[name] = {e["round"] for e in ledger["entries"]
                         if e.get("track", "training") == "training"}
        training = [e for e in ledger["entries"] if e.get("track", "training") == "training"]
        recorded_training = training[-1]["after"]["epsilon"]["patient"] if training else 0.0
        opacus = opacus_epsilon(ledger)
        per_hospital[name] = {
            "training_entries": len(charged[name]), "epsilon_recorded": recorded_training,
            "epsilon_opacus": opacus, "budget": ledger["budget"]["epsilon"],
            "equal": math.isclose(recorded_training, opacus, rel_tol=1e-9, abs_tol=1e-12),
            "within_budget": opacus <= ledger["budget"]["epsilon"] + 1e-12}
    lost = uncounted = 0
    for row in rows:
        r = int(row["round"])
        with_charge = sum(1 for name in names if r in charged[name])
        lost += max(0, int(row["participants"]) - with_charge)
        uncounted += max(0, with_charge - int(row["participants"]))
    return ({"ledger_runs": len(runs), "ledger_entries_doubled": doubled,
             "ledger_entries_lost": lost,
             "charged_but_not_counted": uncounted}, per_hospital)


def model_loads(run_dir: Path) -> int:
    """Parameters of the final model.keras (raises if it does not load)."""
    import keras

    model = keras.saving.load_model(run_dir / "model.keras")
    return int(model.count_params())


def survivors(marker: str) -> list[int]:
    """Pids still running with the deployment's marker."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER_VARIABLE) == marker and process.status() != "zombie":
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


def parse_args() -> argparse.Namespace:
    """The soak's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a new directory")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--epsilon", type=float, default=8.0,
                        help="each hospital's patient-level budget")
    parser.add_argument("--kill-every", type=int, default=5,
                        help="completed rounds between kills (plus or minus 1)")
    parser.add_argument("--round-timeout", type=float, default=30.0,
                        help="seconds the server waits for a round's replies")
    parser.add_argument("--seed", type=int, default=0, help="seed of the chaos and the run")
    parser.add_argument("--timeout", type=float, default=3 * 3600.0)
    return parser.parse_args()


def main() -> int:
    """Run the soak; print its figures; 0 if every check holds."""
    args = parse_args()
    names = hospital_names("heart-disease", args.hospitals)
    chaos = Chaos(rounds=args.rounds, names=names, kill_every=args.kill_every,
                  timeout=args.timeout, rng=random.Random(args.seed))
    settings = DeploySettings(
        hospitals=args.hospitals, task="heart-disease", rounds=args.rounds, out=args.out,
        app_dir=Path(__file__).resolve().parents[1], dp_mode="patient",
        budget_epsilon=args.epsilon, seed=args.seed, timeout_seconds=args.timeout,
        extra_run_config={"round-timeout": args.round_timeout})
    started = time.monotonic()
    error = ""
    try:
        deploy_local(settings, report=chaos.say, follower=chaos.follow)
    except DeploymentError as failed:
        error = str(failed)
    wall = time.monotonic() - started
    left = survivors(chaos.marker) if chaos.marker else []
    out = args.out.resolve()
    rows = completed_rounds(out / "run")
    figures: dict[str, Any] = {"rounds_asked": args.rounds, **round_figures(rows, args.rounds)}
    ledger_counts, per_hospital = ledger_figures(out, names, rows)
    figures.update(ledger_counts)
    figures["kills"] = sum(chaos.kills.values())
    figures.update({f"kills_{kind}": chaos.kills[kind] for kind in KINDS})
    figures["restarts_by_supervisor"] = sum(
        line.count("restarted it (pid") for line in chaos.log)
    figures["resubmissions"] = chaos.resubmissions
    figures["run_ends_without_a_kill"] = chaos.unexpected_ends
    figures["participants_min"] = min((int(r["participants"]) for r in rows), default=0)
    figures["rounds_with_all_hospitals"] = sum(
        1 for r in rows if int(r["participants"]) == args.hospitals)
    try:
        figures["final_model_parameters"] = model_loads(out / "run")
    except Exception as failed:  # noqa: BLE001 - the figure is whether it loads
        figures["final_model_parameters"] = f"does not load: {failed}"
    figures["processes_left_running"] = len(left)
    figures["wall_seconds"] = round(wall, 1)
    print("\nsoak figures")
    for key, value in figures.items():
        print(f"  {key:32} {value}")
    print(f"  {'hospital':14} {'entries':>7} {'eps recorded':>13} {'eps Opacus':>13} "
          f"{'budget':>7} equal within")
    for name, f in per_hospital.items():
        print(f"  {name:14} {f['training_entries']:7d} {f['epsilon_recorded']:13.6f} "
              f"{f['epsilon_opacus']:13.6f} {f['budget']:7.2f} {f['equal']!s:5} "
              f"{f['within_budget']!s}")
    ok = (not error and figures["rounds_lost"] == 0 and figures["rounds_doubled"] == 0
          and figures["ledger_entries_doubled"] == 0
          and figures["ledger_entries_lost"] == 0 and figures["ledger_runs"] == 1
          and all(f["equal"] and f["within_budget"] for f in per_hospital.values())
          and isinstance(figures["final_model_parameters"], int) and not left)
    if error:
        print(f"\nthe deployment failed: {error}")
    print(json.dumps({"ok": ok, **figures, "hospitals": per_hospital}))
    print("soak: every check holds" if ok else "soak: a check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
