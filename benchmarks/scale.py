"""Benchmark: how a simulated federation scales with its hospitals (digits, 10 to 100).

For each size, in one invocation and one after the other, a real (Keras) federation runs
``--rounds`` rounds and the table shows:

- start-up: seconds from calling ``simulate`` until metrics.csv has its first row (Ray's start,
  the workers' imports, the data split and round 1), polled every 0.1 s;
- round 1: the first round's own ``seconds`` in metrics.csv;
- steady: the median ``seconds`` of rounds 2..R (R >= 6 gives at least 5 steady rounds);
- per added hospital: the steady round's growth per hospital since the previous size;
- peak RSS: the largest sum of resident memory over the whole process tree (this process and
  every descendant: Ray's raylet, GCS and workers), sampled every 0.1 s by a background thread
  with psutil. Shared pages count once per process, so this bounds the tree's footprint from
  above; peak PSS (proportional set size, shared pages split between their users) is shown
  next to it.

DP mode ``none`` by default: the benchmark is about how the federation scales with hospitals;
``--dp patient`` (the product default) adds each hospital's ledger and accounting per round.
``--client null`` runs ``benchmarks.null_client`` instead, to show Flower's own floor per size.
Usage: ``python -m benchmarks.scale [--sizes 10,25,50,100] [--rounds 7] [--dp none]
[--client keras|null]``.
"""

import argparse
import csv
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from common.config import RunConfig

GB = 1e9
TARGET_STEADY_SECONDS = 4.0  # at 100 hospitals (issue 15)
TARGET_PEAK_RSS_GB = 6.0
TARGET_COST_RATIO = 2.0  # cost per added hospital 50 -> 100 over 10 -> 25


def tree_memory() -> tuple[int, int]:
    """Return (RSS, PSS) in bytes summed over this process and all its descendants.

    PSS falls back to RSS for a process whose smaps cannot be read.
    """
    root = psutil.Process()
    rss = pss = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info()
            rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # exited between the listing and the reading
        except psutil.AccessDenied:
            try:
                value = process.memory_info().rss
            except psutil.Error:
                continue
            rss, pss = rss + value, pss + value
    return rss, pss


class RunWatcher:
    """Background sampler of one run: peak tree memory, and when metrics.csv got its first row.

    Use as a context manager around the run; read ``peak_rss``, ``peak_pss`` and
    ``first_row_seconds`` (since entering) afterwards.
    """

    def __init__(self, metrics_path: Path, *, interval: float = 0.1) -> None:
        self.metrics_path = metrics_path
        self.interval = interval
        self.peak_rss = self.peak_pss = 0
        self.first_row_seconds: float | None = None
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="run-watcher", daemon=True)

    def __enter__(self) -> "RunWatcher":
        """Start sampling the run's processes."""
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop sampling, after one last sample."""
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        rss, pss = tree_memory()
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        if self.first_row_seconds is None and _data_rows(self.metrics_path) >= 1:
            self.first_row_seconds = time.perf_counter() - self._started


def _data_rows(path: Path) -> int:
    try:
        return max(0, path.read_text().count("\n") - 1)
    except OSError:
        return 0


@dataclass(frozen=True, slots=True)
class SizeResult:
    """One federation size's measurements."""

    hospitals: int
    startup_seconds: float
    first_round_seconds: float
    steady_seconds: float
    peak_rss: int
    peak_pss: int


def _with_keys(client_app: object | None, run_dir: Path) -> object | None:
    """The null client signs with the run's ephemeral roster keys (its replies need proofs)."""
    if client_app == "null":
        from benchmarks.null_client import build_null_app
        from simulations.engine.app_recipe import RecipeClientApp
        from simulations.engine.ephemeral_roster import roster_dir

        return RecipeClientApp(build_null_app, (), roster_dir(run_dir))
    return client_app


def measure(config: RunConfig, client_app: object | None = None) -> SizeResult:
    """Run one simulation of `config` (fedcare's ClientApp unless `client_app`); measure it."""
    from simulations.engine.in_process_engine import Engine
    from simulations.engine.simulate import simulate

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        with RunWatcher(run_dir / "metrics.csv") as watcher:
            # Flower's engine at every size (10 hospitals would run in this process by default).
            simulate(config, run_dir, client_app=_with_keys(client_app, run_dir),
                     engine=Engine.RAY)
        with open(run_dir / "metrics.csv", newline="") as handle:
            seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
    startup = watcher.first_row_seconds
    return SizeResult(config.hospitals, startup if startup is not None else float("nan"),
                      seconds[0], statistics.median(seconds[1:]), watcher.peak_rss,
                      watcher.peak_pss)


def print_table(results: list[SizeResult], title: str) -> None:
    """Print the measurements, the cost per added hospital and the issue's targets."""
    print(title)
    print(f"{'hospitals':>9}{'start-up s':>12}{'round 1 s':>11}{'steady s/round':>16}"
          f"{'ms per added':>14}{'peak RSS GB':>13}{'peak PSS GB':>13}")
    cost: dict[tuple[int, int], float] = {}
    previous: SizeResult | None = None
    for result in results:
        added = ""
        if previous is not None:
            pair = (previous.hospitals, result.hospitals)
            cost[pair] = (result.steady_seconds - previous.steady_seconds) / (pair[1] - pair[0])
            added = f"{1000 * cost[pair]:.1f}"
        print(f"{result.hospitals:>9}{result.startup_seconds:>12.2f}"
              f"{result.first_round_seconds:>11.2f}{result.steady_seconds:>16.3f}{added:>14}"
              f"{result.peak_rss / GB:>13.2f}{result.peak_pss / GB:>13.2f}")
        previous = result
    by_size = {r.hospitals: r for r in results}
    if 100 in by_size:
        print(f"steady round at 100 hospitals: {by_size[100].steady_seconds:.2f} s "
              f"(target <= {TARGET_STEADY_SECONDS:g} s)")
    print(f"peak RSS of the process tree: {max(r.peak_rss for r in results) / GB:.2f} GB "
          f"(target <= {TARGET_PEAK_RSS_GB:g} GB)")
    if (10, 25) in cost and (50, 100) in cost:
        ratio = cost[(50, 100)] / cost[(10, 25)] if cost[(10, 25)] > 0 else float("inf")
        print(f"cost per added hospital, 50->100 over 10->25: {ratio:.2f} "
              f"(target <= {TARGET_COST_RATIO:g}: flat, not quadratic)")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") \
            from None
    if not sizes or min(sizes) < 1 or sizes != sorted(set(sizes)):
        raise argparse.ArgumentTypeError(f"must be increasing integers >= 1, got {text!r}")
    return sizes


def main() -> None:
    """Run every size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--sizes", type=_sizes, default=[10, 25, 50, 100],
                        help="hospital counts, comma-separated (default 10,25,50,100)")
    parser.add_argument("--rounds", type=int, default=7,
                        help="rounds per size, >= 6 for at least 5 steady rounds (default 7)")
    parser.add_argument("--dp", default="none", help="dp mode (default none)")
    parser.add_argument("--client", choices=("keras", "null"), default="keras",
                        help="fedcare's hospitals (default), or the null client's floor")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error(f"--rounds must be >= 2 (round 1 carries the start-up), got {args.rounds}")
    try:
        configs = [RunConfig.from_run_config({"task": args.task, "hospitals": size,
                                              "num-server-rounds": args.rounds,
                                              "dp.mode": args.dp}) for size in args.sizes]
    except ValueError as error:
        parser.error(str(error))  # exits, naming the setting (e.g. too many hospitals)
    client_app = None
    if args.client == "null":
        client_app = "null"  # built per run by _with_keys, with that run's roster keys
    results = []
    for config in configs:
        results.append(measure(config, client_app))
        print(f"  {config.hospitals} hospitals done", flush=True)
    load = os.getloadavg()[0]
    print_table(results, f"{args.task}, {args.client} client, dp {args.dp}, {args.rounds} rounds "
                         f"per size (median of {args.rounds - 1} steady rounds), "
                         f"{psutil.cpu_count()} CPUs, 1-min load average {load:.1f} at the end "
                         "(this run included)")


if __name__ == "__main__":
    main()
