"""Benchmark: start-up and steady seconds per round, real Keras hospitals vs a null client.

Runs, in one invocation, the real federation and a ClientApp that returns its input with the
same message pattern (train + evaluate each round), and prints start-up (round 1, which carries
Ray's start and the workers' imports) and the median steady round (rounds 2..R) for both, and
their ratio, by default in the product's default DP mode (patient level; the null client's
zero update passes the server's norm check in every mode). Usage:
``python -m simulations.benchmark_rounds [--task heart-disease] [--rounds 15] [--dp none]``.
"""

import argparse
import csv
import statistics
import tempfile
from pathlib import Path

from common.config import RunConfig
from simulations.simulate import simulate


def _round_seconds(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [float(row["seconds"]) for row in csv.DictReader(handle)]


def measure(config: RunConfig, client_app: object | None) -> tuple[float, float]:
    """Run one simulation; return (first-round seconds, median steady-round seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        simulate(config, Path(tmp), client_app=client_app)
        seconds = _round_seconds(Path(tmp))
    return seconds[0], statistics.median(seconds[1:])


def main() -> None:
    """Print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="heart-disease")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--dp", default=None,
                        help="dp mode of both runs (default: the product's default, patient)")
    args = parser.parse_args()
    settings = {"task": args.task, "num-server-rounds": args.rounds, "hospitals": args.hospitals}
    if args.dp is not None:
        settings["dp.mode"] = args.dp
    try:
        config = RunConfig.from_run_config(settings)
    except ValueError as error:
        parser.error(str(error))  # exits with the message, naming the setting
    from simulations.null_client import app as null_app

    null_start, null_steady = measure(config, null_app)
    real_start, real_steady = measure(config, None)
    print(f"{args.task}, {args.hospitals} hospitals, {args.rounds} rounds (train + evaluate), "
          f"dp {config.dp_mode}")
    print(f"{'client':<12}{'start-up s':>12}{'steady s/round':>16}")
    print(f"{'null':<12}{null_start:>12.2f}{null_steady:>16.3f}")
    print(f"{'keras':<12}{real_start:>12.2f}{real_steady:>16.3f}")
    print(f"steady ratio keras/null: {real_steady / null_steady:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
