"""Benchmark: a deployed round before and after issue 15 (folding, the lean per-message process).

Runs ``fedcare deploy-local`` (SuperLink + one SuperNode per hospital, TLS, authentication,
each hospital's worker) twice in one invocation:

- ``before``: unfolded rounds (train, then evaluate: two exchanges) with Flower's own
  ``flwr-clientapp`` script for the per-message process;
- ``after``: folded rounds (round r's evaluation rides on round r+1's train message: one
  exchange per steady round) with fedcare's lean ``flwr-clientapp`` (``client.clientapp_process``,
  first on the SuperNodes' PATH), which imports Flower's ClientApp runtime without the SuperNode.

It prints, for each: start-up (round 1), the median steady round (rounds 2..R-1 of
metrics.csv), exchanges per steady round and where a steady round's seconds go, read from the
Flower logs at DEBUG level (``benchmarks.deployment_timeline``: node poll, process start,
hospital work, reply hand-off, server poll, server work), so the floor is shown, not guessed;
then the per-message process's imports before and after (``python -X importtime``, the sum of
the top-level modules' cumulative time, best of 3). With ``--null-floor`` a third deployment
runs the null ClientApp (``benchmarks.null_client``: a zero update, no worker) folded.

What the floor is made of (flwr 1.42): the ServerApp's grid would sleep 3 s between pulls for
replies (fedcare's ``server.exchange`` pulls every 0.25 s instead), a SuperNode sleeps 3 s
whenever a pull finds no message, its SuperExec polls for tasks
(``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``: deploy-local sets 0.25 s) and starts a fresh process per
message, and the SuperNode waits for that process's reply in 0.5 s steps. The SuperNode's 3 s
sleep is hard-coded.

Usage: ``python -m benchmarks.deployment [--hospitals 4] [--rounds 5] [--dp patient]``.
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


def deployed(settings: DeploySettings) -> Deployed:
    """Run one local deployment (Flower logging at DEBUG for the timeline) and time it."""
    deploy_local(settings, report=lambda line: print(f"  {line}", flush=True))
    seconds = [float(row["seconds"]) for row in completed_rounds(settings.out / "run")]
    run = deployment_exchanges(settings.out / "logs",
                               hospital_names(settings.task, settings.hospitals))
    return Deployed(start=seconds[0], steady=statistics.median(seconds[1:-1]),
                    exchanges=statistics.median(exchanges_per_round(run)[1:]),
                    parts=steady_parts(run))


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


# What the per-message process imports before Flower loads the app, then the app (client.entry).
FLOWER_SCRIPT_IMPORTS = ("import flwr.supernode.cli.flwr_clientapp; "
                         "import flwr.supernode.runtime.run_clientapp; import client.entry")
LEAN_IMPORTS = ("import client.clientapp_process as lean; lean.load_runtime(); "
                "lean.argument_parser(); import client.entry")


def main() -> None:
    """Print the before/after tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="heart-disease")
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dp", default="patient", help="the hospitals' dp mode")
    parser.add_argument("--null-floor", action="store_true",
                        help="also deploy the null ClientApp (folded, no worker)")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be >= 3 (round 1 carries the start-up, the last round an "
                     "evaluate exchange of its own)")
    os.environ["FLWR_LOG_LEVEL"] = "DEBUG"  # timestamps on every Flower line, for the timeline
    results: dict[str, Deployed] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = [("before", REPO, False, False), ("after", REPO, True, True)]
        if args.null_floor:
            runs.append(("null", null_client_app(work, args.task, args.hospitals), True, True))
        for label, app_dir, folded, lean in runs:
            print(f"deploy-local, {label}: {'folded' if folded else 'unfolded'}, "
                  f"{'lean' if lean else 'Flower'}'s flwr-clientapp ...", flush=True)
            settings = DeploySettings(
                hospitals=args.hospitals, task=args.task, rounds=args.rounds,
                out=work / f"deploy-{label}", app_dir=app_dir, dp_mode=args.dp, pin_app=False,
                hospital_workers=label != "null", timeout_seconds=3600.0, lean_clientapp=lean,
                extra_run_config={"fold-evaluation": folded})
            results[label] = deployed(settings)
    print(f"\n{args.task}, {args.hospitals} hospitals, {args.rounds} rounds, dp {args.dp}")
    print(f"{'run':<8}{'start-up s':>11}{'steady s':>10}{'exchanges':>11}  "
          + " ".join(f"{part:>8.8}" for part in PARTS))
    for label, result in results.items():
        print(f"{label:<8}{result.start:>11.2f}{result.steady:>10.2f}{result.exchanges:>11.1f}  "
              + " ".join(f"{result.parts[part]:>8.2f}" for part in PARTS))
    print(f"steady round after/before: {results['after'].steady / results['before'].steady:.2f}"
          " (target <= 0.6)")
    before, after = import_seconds(FLOWER_SCRIPT_IMPORTS), import_seconds(LEAN_IMPORTS)
    print(f"per-message process imports (python -X importtime): Flower's flwr-clientapp "
          f"{before:.3f} s, fedcare's lean one {after:.3f} s ({after / before:.2f}x)")


if __name__ == "__main__":
    main()
