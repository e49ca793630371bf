"""Benchmark: start-up and steady seconds per round, real Keras hospitals vs a null client.

Runs, in one invocation, the real federation folded (round r's evaluation rides on round r+1's
train message: one exchange per steady round) and unfolded (train, then evaluate: two
exchanges), and a null ClientApp (a zero update, no work) with the same message pattern, by
default in the product's default DP mode (patient level). Prints start-up (round 1, which
carries Ray's start and the workers' imports), the median steady round (rounds 2..R-1; the
last round has an evaluate exchange of its own) and the hospitals' own seconds inside their
handlers per steady round (summed over hospitals, and the largest single handler), next to the
wall seconds, so work hiding inside Flower's tick is visible. Usage:
``python -m benchmarks.rounds [--task heart-disease] [--rounds 15] [--dp none]``.
"""

import argparse
import csv
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.handler_timing import StartUp
from common.config import RunConfig
from simulations.engine.simulate import simulate


@dataclass(frozen=True, slots=True)
class Measured:
    """One simulation's figures (seconds)."""

    start: float
    steady: float
    handler_sum: float
    handler_max: float
    exchanges: float  # messages per hospital in a steady round
    start_up: StartUp  # round 1 decomposed


def _round_seconds(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [float(row["seconds"]) for row in csv.DictReader(handle)]


@contextmanager
def first_round_start() -> Iterator[list[float]]:
    """Within the block, the driver's "round 1: started" debug record's time is appended to
    the yielded list (the ServerApp runs in a thread of this process).
    """
    times: list[float] = []

    class RoundOne(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not times and record.getMessage() == "round 1: started":
                times.append(record.created)

    driver = logging.getLogger("server.federation")
    handler, level = RoundOne(logging.DEBUG), driver.level
    driver.addHandler(handler)
    driver.setLevel(logging.DEBUG)
    try:
        yield times
    finally:
        driver.removeHandler(handler)
        driver.setLevel(level)
    if not times:
        raise RuntimeError("the driver never logged 'round 1: started'")


def measure(config: RunConfig, client: str, engine: str = "ray") -> Measured:
    """Run one simulation with the `client` ("keras" or "null") on `engine` ("ray", Flower's
    simulation engine, or "in-process", the default for <= 10 hospitals) and time it.
    """
    from benchmarks.handler_timing import (
        handler_seconds,
        start_up,
        timed_client_app,
        timed_null_app,
    )
    from simulations.engine.app_recipe import RecipeClientApp
    from simulations.engine.ephemeral_roster import roster_dir
    from simulations.engine.in_process_engine import Engine
    from simulations.engine.simulate import SimulatedHospitalPrivacy, with_ephemeral_roster

    with tempfile.TemporaryDirectory() as tmp:
        run_dir, timing = Path(tmp) / "run", Path(tmp) / "timing"
        run_dir.mkdir()
        config = with_ephemeral_roster(config, run_dir)  # the hospitals sign with its keys
        if client == "null":
            app = RecipeClientApp(timed_null_app, timing, roster_dir(run_dir))
        else:
            app = RecipeClientApp(timed_client_app, timing,
                                  SimulatedHospitalPrivacy(config, run_dir / "ledgers"))
        began = time.time()
        with first_round_start() as round_one:
            # Flower's engine: its start-up and its 0.1 s tick are what the Ray rows measure.
            simulate(config, run_dir, client_app=app, engine=Engine(engine))
        seconds = _round_seconds(run_dir)
        handlers = handler_seconds(timing)
        first = start_up(timing, began, round_one[0])
    steady_rounds = range(2, len(seconds))  # not round 1 (start-up) nor the last (own evaluate)
    return Measured(
        start=seconds[0], steady=statistics.median(seconds[1:-1]),
        handler_sum=statistics.median(handlers[r][0] for r in steady_rounds),
        handler_max=statistics.median(handlers[r][1] for r in steady_rounds),
        exchanges=statistics.median(handlers[r][2] for r in steady_rounds) / config.hospitals,
        start_up=first)


def main() -> None:
    """Print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="heart-disease")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--dp", default=None,
                        help="dp mode of every run (default: the product's default, patient)")
    args = parser.parse_args()
    settings = {"task": args.task, "num-server-rounds": args.rounds, "hospitals": args.hospitals}
    if args.dp is not None:
        settings["dp.mode"] = args.dp
    try:
        config = RunConfig.from_run_config(settings)
    except ValueError as error:
        parser.error(str(error))  # exits with the message, naming the setting
    unfolded = replace(config, fold_evaluation=False)
    rows = [("null", "folded", measure(config, "null")),
            ("keras", "folded", measure(config, "keras")),
            ("keras", "unfolded", measure(unfolded, "keras"))]
    in_process = measure(config, "keras", "in-process")
    print(f"{args.task}, {args.hospitals} hospitals, {args.rounds} rounds, dp {config.dp_mode}")
    print(f"{'client':<8}{'rounds':<10}{'start-up s':>11}{'steady s':>10}"
          f"{'handlers sum s':>16}{'handler max s':>15}{'exchanges':>11}")
    for client, mode, m in rows:
        print(f"{client:<8}{mode:<10}{m.start:>11.2f}{m.steady:>10.3f}{m.handler_sum:>16.4f}"
              f"{m.handler_max:>15.4f}{m.exchanges:>11.1f}")
    print("\nstart-up, seconds from simulate(): the ServerApp's round 1 begins (server ready); "
          "the first hospital process exists (Ray started, actors spawned); from a process's "
          "creation to its first handler (imports, actor set-up, waiting for the message); the "
          "first handler itself")
    print(f"{'client':<8}{'rounds':<10}{'server ready':>13}{'to workers':>11}{'imports':>10}"
          f"{'1st handler':>13}")
    for client, mode, m in rows:
        print(f"{client:<8}{mode:<10}{m.start_up.server_ready:>13.2f}{m.start_up.to_workers:>11.2f}"
              f"{m.start_up.worker_imports:>10.2f}{m.start_up.first_handler:>13.2f}")
    null, folded, plain = (m for _, _, m in rows)
    print(f"steady folded/unfolded: {folded.steady / plain.steady:.2f} (target <= 0.6)")
    print(f"steady keras/null (folded): {folded.steady / null.steady:.2f}")
    print(f"in this process (the default engine for <= 10 hospitals), keras folded: start-up "
          f"{in_process.start:.2f} s, steady {in_process.steady:.3f} s "
          f"({in_process.steady / folded.steady:.2f}x Ray's steady round)")


if __name__ == "__main__":
    main()
