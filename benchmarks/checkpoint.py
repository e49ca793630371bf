"""Benchmark: the server checkpoint's cost as a fraction of a steady round.

Runs one simulation (default: heart-disease, 4 hospitals, 20 rounds, the default patient-level
DP), takes the median steady round (rounds 2..R) from its metrics.csv, then re-writes its last
checkpoint (weights, optimizer state, every metrics row, the run's state) `--repeats` times into
a scratch directory with the same atomic, fsynced, checksummed writer the server uses, and
prints the median write (and read) time and the ratio to the round. Usage:
``python -m benchmarks.checkpoint [--task heart-disease] [--rounds 20]``.
"""

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.rounds import _round_seconds
from common.config import RunConfig
from server.checkpoint import load_latest_checkpoint, save_checkpoint
from simulations.engine.simulate import simulate


def time_checkpoint(run_dir: Path, repeats: int) -> tuple[float, float, int]:
    """Median seconds to save and to load the run's last checkpoint; its size in bytes."""
    checkpoint = load_latest_checkpoint(run_dir / "checkpoint")
    saves, loads = [], []
    with tempfile.TemporaryDirectory(dir=run_dir) as scratch:
        directory = Path(scratch)
        for index in range(repeats):
            copy = dataclasses.replace(checkpoint, round=index + 1)
            started = time.perf_counter()
            save_checkpoint(directory, copy)
            saves.append(time.perf_counter() - started)
            started = time.perf_counter()
            load_latest_checkpoint(directory)
            loads.append(time.perf_counter() - started)
        size = sum(p.stat().st_size for p in directory.glob(f"round-{repeats:04d}.*"))
    return statistics.median(saves), statistics.median(loads), size


def main() -> None:
    """Print the checkpoint's cost next to the steady round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="heart-disease")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--dp", default="patient")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    config = RunConfig.from_run_config({"task": args.task, "num-server-rounds": args.rounds,
                                        "hospitals": args.hospitals, "dp.mode": args.dp})
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        simulate(config, run_dir)
        steady = statistics.median(_round_seconds(run_dir)[1:])
        save, load, size = time_checkpoint(run_dir, args.repeats)
    print(f"{args.task}, {args.hospitals} hospitals, {args.rounds} rounds, dp {args.dp}")
    print(f"steady round (median of rounds 2..{args.rounds}): {steady * 1000:.1f} ms")
    print(f"checkpoint write (median of {args.repeats}, fsynced): {save * 1000:.2f} ms, "
          f"{size / 1024:.1f} KiB; read + verify: {load * 1000:.2f} ms")
    print(f"checkpoint / steady round: {save / steady:.1%} (target < 5%)")


if __name__ == "__main__":
    main()
