"""Benchmark: steady round time with secure aggregation, as a ratio to plain rounds.

Runs the same federation (same task, hospitals and seed) with and without
``--secure-aggregation`` and prints the median steady round (rounds 2..R) of each and their
ratio. Usage: ``python -m simulations.benchmark_secagg_rounds [--task digits] [--hospitals 10]``.
The digits MLP has 8,970 parameters (about 10^4).
"""

import argparse

from common.config import RunConfig
from simulations.benchmark_rounds import measure


def main() -> None:
    """Print plain vs secure steady rounds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--hospitals", type=int, nargs="+", default=[10])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dp", default="none")
    args = parser.parse_args()
    print(f"{'hospitals':>10}{'plain s':>10}{'secure s':>10}{'ratio':>8}   ({args.task}, dp {args.dp})")
    for hospitals in args.hospitals:
        settings = {"task": args.task, "hospitals": hospitals, "num-server-rounds": args.rounds,
                    "dp.mode": args.dp, "dp.epsilon": 8.0}
        _, plain = measure(RunConfig.from_run_config(settings), None)
        _, secure = measure(RunConfig.from_run_config({**settings, "secagg.enabled": True}), None)
        print(f"{hospitals:>10}{plain:>10.3f}{secure:>10.3f}{secure / plain:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
