"""Benchmark: nanoseconds per Gaussian draw, SecureRandom (ChaCha20) vs NumPy's PCG64.

Run ``python -m benchmarks.secure_random [--draws N] [--repeats R]``. Each
generator draws ``N`` standard normals (float64 and float32) and ``N`` uniforms, ``R`` times,
interleaved so that load on the machine hits both alike; the median is reported. A last table
times one DP-SGD epoch on scikit-learn's digits (MLP 64-64-10, batch 64, Dense shortcut) with
each generator driving the Poisson masks and the noise.
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from common.dp.secure_random import SecureRandom


def _median_seconds(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for run in functions.values():
        run()  # warm up
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, run in functions.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def draws(count: int, repeats: int) -> None:
    """Print ns per draw for each generator and kind of draw."""
    secure, pcg = SecureRandom(), np.random.default_rng()
    kinds = {
        "normal float64": lambda g: g.standard_normal(count),
        "normal float32": lambda g: g.standard_normal(count, dtype=np.float32),
        "uniform float64": lambda g: g.random(count),
    }
    print(f"{count} draws, median of {repeats}")
    print(f"  {'draw':<16} {'SecureRandom ns':>16} {'PCG64 ns':>10} {'ratio':>7}")
    for kind, draw in kinds.items():
        times = _median_seconds({"secure": lambda d=draw: d(secure),
                                 "pcg": lambda d=draw: d(pcg)}, repeats)
        ns = {name: seconds / count * 1e9 for name, seconds in times.items()}
        print(f"  {kind:<16} {ns['secure']:>16.1f} {ns['pcg']:>10.1f} "
              f"{ns['secure'] / ns['pcg']:>7.2f}")


def dp_epoch(repeats: int) -> None:
    """Print seconds per DP-SGD epoch on digits with each generator."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from sklearn.datasets import load_digits

    from client.dp_sgd import DpSgdTrainer

    data = load_digits()
    x, y = (data.data / 16.0).astype(np.float32), data.target.astype(np.float32)

    def trainer() -> DpSgdTrainer:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                                  keras.layers.Dense(64, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        return DpSgdTrainer(model, loss="sparse_categorical_crossentropy",
                            optimizer=keras.optimizers.SGD(0.05), l2_norm_clip=1.0,
                            noise_multiplier=1.0, method="dense_norms")

    secure_trainer, pcg_trainer = trainer(), trainer()
    secure, pcg = SecureRandom(), np.random.default_rng(0)
    times = _median_seconds({
        "secure": lambda: secure_trainer.train(x, y, batch_size=64, rng=secure),
        "pcg": lambda: pcg_trainer.train(x, y, batch_size=64, rng=pcg),
    }, repeats)
    print(f"\nDP-SGD epoch, digits (1797 x 64, 29 steps, 8970 parameters), median of {repeats}")
    print(f"  SecureRandom {times['secure'] * 1e3:.2f} ms, PCG64 {times['pcg'] * 1e3:.2f} ms, "
          f"ratio {times['secure'] / times['pcg']:.2f}")


def main() -> None:
    """Parse arguments and print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-epoch", action="store_true", help="skip the DP-SGD epoch table")
    args = parser.parse_args()
    draws(args.draws, args.repeats)
    if not args.no_epoch:
        dp_epoch(args.repeats)


if __name__ == "__main__":
    main()
