"""Benchmark: steady round time with secure aggregation, as a ratio to the unfolded plain round.

Runs the same federation (same task, hospitals and seed) plain and unfolded (train, then
evaluate: two exchanges per round), plain folded (one exchange) and with
``--secure-aggregation`` (four exchanges: train + share-keys, masked-input, consistency-check,
unmask + next keys), and prints the median steady round of each, the secure round's ratio to
the unfolded plain round and its message exchanges per steady round. Usage:
``python -m benchmarks.secagg_rounds [--task digits] [--hospitals 10]``.
The digits MLP has 8,970 parameters (about 10^4).
"""

import argparse
from dataclasses import replace

from benchmarks.rounds import measure
from common.config import RunConfig


def main() -> None:
    """Print plain vs secure steady rounds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--hospitals", type=int, nargs="+", default=[10])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dp", default="none")
    args = parser.parse_args()
    print(f"{'hospitals':>10}{'unfolded s':>12}{'folded s':>10}{'secure s':>10}"
          f"{'secure/unfolded':>17}{'exchanges':>11}   ({args.task}, dp {args.dp})")
    for hospitals in args.hospitals:
        settings = {"task": args.task, "hospitals": hospitals, "num-server-rounds": args.rounds,
                    "dp.mode": args.dp, "dp.epsilon": 8.0}
        config = RunConfig.from_run_config(settings)
        unfolded = measure(replace(config, fold_evaluation=False), "keras").steady
        folded = measure(config, "keras").steady
        secure = measure(RunConfig.from_run_config({**settings, "secagg.enabled": True}),
                         "keras")
        print(f"{hospitals:>10}{unfolded:>12.3f}{folded:>10.3f}{secure.steady:>10.3f}"
              f"{secure.steady / unfolded:>16.2f}x{secure.exchanges:>11.1f}", flush=True)


if __name__ == "__main__":
    main()
