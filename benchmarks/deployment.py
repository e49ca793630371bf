"""Benchmark: a deployed round with the ClientApp fork server and the short poll off and on.

Runs ``fedcare deploy-local`` (SuperLink + one SuperNode per hospital, TLS, authentication,
each hospital's worker, folded rounds, fedcare's lean ``flwr-clientapp`` first on PATH) in
one invocation, the same run in each configuration:

- ``before``: no fork server, Flower's SuperNode: each message's ``flwr-clientapp`` is a fresh
  Python that imports Flower's ClientApp runtime (the lean entry, which already skips
  re-extracting an installed bundle: ``install_once``), and a SuperNode sleeps 3 s when idle;
- ``fork``: each hospital's ClientApp fork server (``client.fork_server``) forks the per-message
  process from a preloaded runtime; Flower's SuperNode unchanged;
- ``after``: the fork server and ``fedcare-supernode`` (``client.short_poll_supernode``: the
  idle poll ``--idle-poll-seconds``, default 0.25 s, and a 0.05 s reply wait).

``--repeat N`` runs the sequence N times (interleaved, so a change in the machine's load
falls on every configuration) and takes each configuration's median. It prints the load
average before and after, then for each configuration: start-up (round 1), the median steady
round (rounds 2..R-1 of metrics.csv), the CPU seconds all of the deployment's processes spend
per steady round (what a shorter poll costs), exchanges per steady round and where a steady round's
seconds go, read from the Flower logs at DEBUG level (``benchmarks.deployment_timeline``:
node poll, process start, hospital work, reply hand-off, server poll, server work); then the
ratios to ``before``, and the per-message process's imports (``python -X importtime``, the sum
of the top-level modules' cumulative time, best of 3): Flower's script, the lean entry, and
the launcher that hands the message to the fork server. With ``--null-floor`` a further
deployment runs the null ClientApp (``benchmarks.null_client``: a zero update, no worker) in
the ``after`` configuration.

What the floor is made of (flwr 1.42): the ServerApp's grid would sleep 3 s between pulls for
replies (fedcare's ``server.exchange`` pulls every 0.25 s instead), a SuperNode sleeps 3 s
whenever a pull finds no message, its SuperExec polls for tasks
(``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``: deploy-local sets 0.25 s) and starts a process per
message, and the SuperNode waits for that process's reply in 0.5 s steps. "process start"
includes the SuperNode's own pull of the message from the SuperLink.

Usage: ``python -m benchmarks.deployment [--hospitals 4] [--rounds 5] [--repeat 1]``.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.deployment_timeline import (
    PARTS,
    deployment_exchanges,
    exchanges_per_round,
    steady_parts,
)
from simulations.deployment.deploy_local import (
    DeploySettings,
    completed_rounds,
    deploy_local,
    hospital_names,
)

REPO = Path(__file__).resolve().parents[1]
NULL_CLIENT = "benchmarks.null_client:app"
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "runs", "tests", "__pycache__", ".flwr",
                                     ".pytest_cache", ".hypothesis", "*.egg-info")


def null_client_app(directory: Path, task: str, hospitals: int) -> Path:
    """Copy this app into `directory` with its ClientApp component set to the null client.

    The copy carries the null client's facts for `task` (``null_client.write_facts``), so its
    per-message process imports only Flower and numpy, like fedcare's light relay.
    """
    from benchmarks.null_client import write_facts

    app = directory / "null-app"
    shutil.copytree(REPO, app, ignore=COPY_IGNORE)
    write_facts(app / "simulations", task, hospitals)
    pyproject = app / "pyproject.toml"
    text, count = re.subn(r'(?m)^clientapp\s*=\s*"[^"]*"', f'clientapp = "{NULL_CLIENT}"',
                          pyproject.read_text())
    if count != 1:
        raise RuntimeError(f"{pyproject}: expected one clientapp component, found {count}")
    pyproject.write_text(text)
    return app


@dataclass(frozen=True, slots=True)
class Deployed:
    """One deployment's figures (seconds)."""

    start: float
    steady: float
    exchanges: float  # per steady round
    parts: dict[str, float]  # deployment_timeline.PARTS -> seconds per steady round
    cpu: float  # CPU seconds per steady round, all of the deployment's processes together


def deployment_cpu_seconds(out: Path) -> float:
    """CPU seconds used so far by the processes working under `out`, and their reaped children.

    Every party of a deploy-local runs in a directory under OUT (the SuperLink and ServerApp
    in the admin's Flower home, each SuperNode, SuperExec and ClientApp process in its
    hospital's, the workers and fork servers in the hospital directories).
    """
    import psutil

    total, prefix = 0.0, str(out.resolve())
    for process in psutil.process_iter():
        try:
            if process.cwd().startswith(prefix):
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
        except (psutil.Error, OSError):
            continue
    return total


def deployed(settings: DeploySettings) -> Deployed:
    """Run one local deployment (Flower logging at DEBUG for the timeline) and time it.

    The CPU figure is sampled whenever deploy-local sees a round end: between the first and
    the last sample within rounds 1..R-1, divided by the rounds in between.
    """
    samples: dict[int, float] = {}

    def on_round(rows: list[dict[str, str]]) -> None:
        samples.setdefault(len(rows), deployment_cpu_seconds(settings.out))

    deploy_local(settings, report=lambda line: print(f"  {line}", flush=True), on_round=on_round)
    seconds = [float(row["seconds"]) for row in completed_rounds(settings.out / "run")]
    run = deployment_exchanges(settings.out / "logs",
                               hospital_names(settings.task, settings.hospitals))
    ends = sorted(k for k in samples if 1 <= k <= len(seconds) - 1)  # steady rounds' ends
    cpu = ((samples[ends[-1]] - samples[ends[0]]) / (ends[-1] - ends[0]) if len(ends) > 1
           else float("nan"))
    return Deployed(start=seconds[0], steady=statistics.median(seconds[1:-1]),
                    exchanges=statistics.median(exchanges_per_round(run)[1:]),
                    parts=steady_parts(run), cpu=cpu)


def import_seconds(code: str, *, repeats: int = 3) -> float:
    """Seconds of imports in a fresh ``python -X importtime -c CODE`` (best of `repeats`)."""
    best = float("inf")
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=REPO,
                              capture_output=True, text=True, check=True)
        top_level = [int(line.split("|")[1]) for line in done.stderr.splitlines()
                     if line.startswith("import time:") and "|" in line
                     and not line.split("|")[2].startswith("  ")
                     and line.split("|")[1].strip().isdigit()]
        best = min(best, sum(top_level) / 1e6)
    return best


# What the per-message process imports before Flower loads the app, then the app (client.entry);
# the launcher imports only what hands the message to the fork server.
FLOWER_SCRIPT_IMPORTS = ("import flwr.supernode.cli.flwr_clientapp; "
                         "import flwr.supernode.runtime.run_clientapp; import client.entry")
LEAN_IMPORTS = ("import client.clientapp_process as lean; lean.load_runtime(); "
                "lean.argument_parser(); import client.entry")
LAUNCHER_IMPORTS = "import client.clientapp_process, client.fork_launcher"


@dataclass(frozen=True, slots=True)
class Configuration:
    """One way to deploy: the fork server on or off, and the SuperNode's idle poll."""

    label: str
    fork_server: bool
    idle_poll_seconds: float | None  # None: Flower's own SuperNode (3 s)
    app: str = "fedcare"  # or "null": the null ClientApp, no worker

    def describe(self) -> str:
        """One line: what this configuration runs."""
        poll = ("Flower's SuperNode (3 s idle poll)" if self.idle_poll_seconds is None
                else f"fedcare-supernode ({self.idle_poll_seconds:g} s idle poll)")
        return (f"{'fork server' if self.fork_server else 'a fresh process per message'}, "
                f"{poll}{', null ClientApp' if self.app == 'null' else ''}")


def configurations(idle_poll: float, null_floor: bool) -> list[Configuration]:
    """The configurations: before (both off), fork (server only), after (both on), null."""
    runs = [Configuration("before", False, None), Configuration("fork", True, None),
            Configuration("after", True, idle_poll)]
    if null_floor:
        runs.append(Configuration("null", True, idle_poll, app="null"))
    return runs


def median_result(results: list[Deployed]) -> Deployed:
    """Each figure's median over repeated deployments of one configuration."""
    return Deployed(start=statistics.median(r.start for r in results),
                    steady=statistics.median(r.steady for r in results),
                    exchanges=statistics.median(r.exchanges for r in results),
                    parts={part: statistics.median(r.parts[part] for r in results)
                           for part in PARTS},
                    cpu=statistics.median(r.cpu for r in results))


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, and the core count."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def run_all(args: argparse.Namespace, work: Path) -> dict[str, list[Deployed]]:
    """Deploy every configuration `args.repeat` times, interleaved; label -> results."""
    runs = configurations(args.idle_poll_seconds, args.null_floor)
    apps = {"fedcare": REPO}
    if args.null_floor:
        apps["null"] = null_client_app(work, args.task, args.hospitals)
    results: dict[str, list[Deployed]] = {run.label: [] for run in runs}
    for repeat in range(args.repeat):
        for run in runs:
            print(f"deploy-local, {run.label} ({repeat + 1}/{args.repeat}): {run.describe()}; "
                  f"{load_average()}", flush=True)
            settings = DeploySettings(
                hospitals=args.hospitals, task=args.task, rounds=args.rounds,
                out=work / f"deploy-{run.label}-{repeat}", app_dir=apps[run.app],
                dp_mode=args.dp, pin_app=False, hospital_workers=run.app == "fedcare",
                timeout_seconds=3600.0, fork_server=run.fork_server,
                idle_poll_seconds=run.idle_poll_seconds,
                extra_run_config={"fold-evaluation": True})
            results[run.label].append(deployed(settings))
    return results


def print_table(args: argparse.Namespace, medians: dict[str, Deployed]) -> None:
    """The figures of each configuration and the ratios to ``before``."""
    print(f"\n{args.task}, {args.hospitals} hospitals, {args.rounds} rounds, dp {args.dp}, "
          f"median of {args.repeat}")
    print(f"{'run':<8}{'start-up s':>11}{'steady s':>10}{'CPU s':>7}{'exchanges':>11}  "
          + " ".join(f"{part:>8.8}" for part in PARTS))
    for label, result in medians.items():
        print(f"{label:<8}{result.start:>11.2f}{result.steady:>10.2f}{result.cpu:>7.2f}"
              f"{result.exchanges:>11.1f}  "
              + " ".join(f"{result.parts[part]:>8.2f}" for part in PARTS))
    print("(CPU s: CPU seconds per steady round, every process of the deployment together)")
    before = medians["before"].steady
    print(f"steady round fork/before: {medians['fork'].steady / before:.2f} (target <= 0.7, "
          f"Flower's SuperNode unchanged); after/before: {medians['after'].steady / before:.2f} "
          "(target <= 0.4, with the short poll)")


def main() -> None:
    """Deploy each configuration and print the before/after table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="heart-disease")
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dp", default="patient", help="the hospitals' dp mode")
    parser.add_argument("--repeat", type=int, default=1, help="deployments per configuration")
    parser.add_argument("--idle-poll-seconds", type=float, default=0.25,
                        help="fedcare-supernode's idle poll in the after configuration")
    parser.add_argument("--null-floor", action="store_true",
                        help="also deploy the null ClientApp (after configuration, no worker)")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be >= 3 (round 1 carries the start-up, the last round an "
                     "evaluate exchange of its own)")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    os.environ["FLWR_LOG_LEVEL"] = "DEBUG"  # timestamps on every Flower line, for the timeline
    print(load_average(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = run_all(args, Path(tmp))
    print(f"\nafter the runs: {load_average()}")
    print_table(args, {label: median_result(runs) for label, runs in results.items()})
    flowers, lean, launcher = (import_seconds(FLOWER_SCRIPT_IMPORTS), import_seconds(LEAN_IMPORTS),
                               import_seconds(LAUNCHER_IMPORTS))
    print(f"per-message process imports (python -X importtime): Flower's flwr-clientapp "
          f"{flowers:.3f} s, fedcare's lean one {lean:.3f} s, the fork server's launcher "
          f"{launcher:.3f} s ({launcher / flowers:.3f}x Flower's)")


if __name__ == "__main__":
    main()
