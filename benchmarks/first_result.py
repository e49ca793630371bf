"""Benchmark: the first result, ``fedcare simulate --rounds 1``: wall seconds, and where they go.

In one invocation, alternating between the variants over ``--repeat`` rounds so that the
machine's load falls on all of them alike: the command's wall and CPU seconds (its whole
process tree) with the load average before each run, for Ray's engine and the in-process
engine (the default up to 10 hospitals), and with ``--baseline DIR`` for the fedcare checkout
at DIR too (e.g. ``git worktree add /tmp/before <commit>``), run the same way. Then one
instrumented run per variant splits its wall time into parts: the command's start (imports),
simulate() to the server's round 1 (TensorFlow, the apps; Ray's start), round 1's start to the
first handler (Ray's actors and their imports), the first handler (the model's trace, the
noise calibration, the first charge), the rest of the run to report.md, and the shutdown
(report.md to the process's end). Usage:
``python -m benchmarks.first_result [--repeat 3] [--baseline DIR] [--hospitals 4]``.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = "from simulations.cli.main import main; main()"


@dataclass(frozen=True, slots=True)
class Variant:
    """One way to get the first result: a checkout and the engine it is asked for."""

    label: str
    tree: Path
    engine: str | None  # None: the checkout's default (a checkout without --engine)


@dataclass(frozen=True, slots=True)
class Timed:
    """One run of the command: wall and CPU seconds (the process tree's), load before."""

    wall: float
    cpu: float
    load: float


def _environment(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "120"}


def time_command(variant: Variant, hospitals: int, out: Path) -> Timed:
    """Run ``fedcare simulate --rounds 1 --out OUT --force`` of `variant` once."""
    args = ["simulate", "--rounds", "1", "--hospitals", str(hospitals), "--out", str(out),
            "--force"] + (["--engine", variant.engine] if variant.engine else [])
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CLI, *args], cwd=variant.tree,
                          env=_environment(variant.tree), capture_output=True, text=True,
                          timeout=1800, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{variant.label}: exit {done.returncode}\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu, load)


def measure_parts(variant: Variant, hospitals: int, work: Path) -> dict[str, float]:
    """One instrumented run of `variant` (this file's ``--child``): its parts in seconds."""
    marks = work / "marks.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(work),
               str(hospitals), variant.engine or ""]
    started = time.time()
    done = subprocess.run(command, cwd=variant.tree, env=_environment(variant.tree),
                          capture_output=True, text=True, timeout=1800, check=False)
    ended = time.time()
    if done.returncode != 0 or not marks.exists():
        raise RuntimeError(f"{variant.label}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return _parts(json.loads(marks.read_text()), started, ended)


def _parts(marks: dict[str, float], started: float, ended: float) -> dict[str, float]:
    """Split [started, ended] at the child's marks."""
    return {
        "command start (imports)": marks["simulate"] - started,
        "to round 1 (TensorFlow, apps; Ray start)": marks["round_one"] - marks["simulate"],
        "to first handler (actors, their imports)": marks["first_start"] - marks["round_one"],
        "first handler (trace, calibration, charge)": marks["first_seconds"],
        "rest of the run, to report.md": marks["report"] - marks["first_start"]
        - marks["first_seconds"],
        "shutdown (report.md to exit)": ended - marks["report"],
        "total": ended - started,
    }


def child(work: Path, hospitals: int, engine: str) -> None:
    """Run the command's simulation with timed handlers; write the marks; exit as the CLI does.

    Runs under the checkout on PYTHONPATH (its own simulate(), apps and exit).
    """
    import inspect

    from benchmarks.handler_timing import timed_client_app
    from benchmarks.rounds import first_round_start
    from common.config import RunConfig
    from simulations.engine.app_recipe import RecipeClientApp
    from simulations.engine.simulate import (
        SimulatedHospitalPrivacy,
        simulate,
        with_ephemeral_roster,
    )

    run_dir, timing = work / "run", work / "timing"
    run_dir.mkdir(parents=True)
    # As simulate() does before it builds fedcare's own app: the hospitals' roster keys.
    config = with_ephemeral_roster(
        RunConfig.from_run_config({"num-server-rounds": 1, "hospitals": hospitals}), run_dir)
    app = RecipeClientApp(timed_client_app, timing,
                          SimulatedHospitalPrivacy(config, run_dir / "ledgers"))
    options: dict[str, Any] = (
        {"engine": engine} if engine and "engine" in inspect.signature(simulate).parameters
        else {})  # a checkout without engines: its only one
    began = time.time()
    with first_round_start() as round_one:
        simulate(config, run_dir, client_app=app, **options)
    first = min((line.split() for path in timing.glob("*.txt")
                 for line in path.read_text().splitlines()), key=lambda rec: float(rec[2]))
    (work / "marks.json").write_text(json.dumps({
        "simulate": began, "round_one": round_one[0], "first_start": float(first[2]),
        "first_seconds": float(first[1]), "report": (run_dir / "report.md").stat().st_mtime}))
    try:
        from simulations.cli.prompt_exit import run_then_exit
    except ImportError:  # a checkout whose command exits the ordinary way
        sys.exit(0)
    run_then_exit(lambda: None)


def main() -> None:
    """Print the wall-time table and the parts table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--baseline", type=Path, help="another fedcare checkout to time too")
    args = parser.parse_args()
    variants = ([Variant("baseline (its default)", args.baseline.resolve(), None)]
                if args.baseline else [])
    variants += [Variant("ray", ROOT, "ray"), Variant("in-process", ROOT, "in-process")]
    timed: dict[str, list[Timed]] = {v.label: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeat):
            for variant in variants:
                out = Path(tmp) / f"{repeat}-{variant.label.split()[0]}"
                timed[variant.label].append(time_command(variant, args.hospitals, out))
        parts = {v.label: measure_parts(v, args.hospitals, Path(tmp) / f"parts-{i}")
                 for i, v in enumerate(variants)}
    print(f"fedcare simulate --rounds 1, {args.hospitals} hospitals, {args.repeat} runs each, "
          f"interleaved; {os.cpu_count()} cores")
    print(f"{'variant':<26}{'median wall s':>14}{'runs (wall s)':>28}{'median CPU s':>14}"
          f"{'load before':>14}")
    for label, runs in timed.items():
        walls = " ".join(f"{r.wall:.1f}" for r in runs)
        loads = " ".join(f"{r.load:.1f}" for r in runs)
        print(f"{label:<26}{statistics.median(r.wall for r in runs):>14.1f}{walls:>28}"
              f"{statistics.median(r.cpu for r in runs):>14.1f}{loads:>14}")
    print("\nparts of one instrumented run each, wall seconds")
    names = list(next(iter(parts.values())))
    print(f"{'part':<46}" + "".join(f"{label.split()[0]:>14}" for label in parts))
    for name in names:
        print(f"{name:<46}" + "".join(f"{p[name]:>14.2f}" for p in parts.values()))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        main()
