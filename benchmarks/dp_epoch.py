"""Benchmark: seconds per local epoch, plain compiled epoch vs DP-SGD (both per-example paths).

Run ``python -m benchmarks.dp_epoch [--repeats N]``. Two workloads:

- digits: scikit-learn's bundled 8x8 digits (1797 x 64, scaled to [0, 1]), MLP 64-64-10
  softmax, batch 64;
- logistic: 200 x 13 synthetic records, logistic regression 13 -> 1 sigmoid, batch 16.

Each path gets its own model (same initial weights), is compiled and traced once, then the
paths are timed interleaved, ``repeats`` epochs each, so that load on the machine hits all of
them alike. DP epochs include drawing the Poisson masks and noise seeds with NumPy.
The target from DESIGN.md: a DP epoch costs at most 3x the plain compiled epoch on digits.
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from client.dp_sgd import DpSgdTrainer, make_plain_epoch_fn  # noqa: E402

TARGET_RATIO = 3.0


def _digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target.astype(np.float32)


def _logistic(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 13)).astype(np.float32)
    logits = x @ rng.normal(size=13) + 0.3 * rng.normal(size=200)
    return x, (logits > 0).astype(np.float32)


def _build(layers: list[tuple[int, str | None]], width: int, weights: list | None) -> keras.Model:
    model = keras.Sequential(
        [keras.Input((width,))] + [keras.layers.Dense(units, activation=a) for units, a in layers]
    )
    if weights is not None:
        model.set_weights(weights)
    return model


def _epoch_functions(
    x: np.ndarray,
    y: np.ndarray,
    layers: list[tuple[int, str | None]],
    loss: str,
    batch_size: int,
    seed: int,
) -> dict[str, Callable[[], object]]:
    template = _build(layers, x.shape[1], None).get_weights()
    plain = make_plain_epoch_fn(
        _build(layers, x.shape[1], template), loss, keras.optimizers.SGD(0.05)
    )
    functions: dict[str, Callable[[], object]] = {}
    plain_rng = np.random.default_rng(seed)
    functions["plain"] = lambda: plain(x, y, batch_size=batch_size, rng=plain_rng)
    for method in ("vectorized_map", "dense_norms"):
        trainer = DpSgdTrainer(
            _build(layers, x.shape[1], template), loss=loss,  # type: ignore[arg-type]
            optimizer=keras.optimizers.SGD(0.05), l2_norm_clip=1.0, noise_multiplier=1.0,
            method=method,  # type: ignore[arg-type]
        )
        rng = np.random.default_rng(seed)
        functions[f"dp-{method}"] = (
            lambda t=trainer, r=rng: t.train(x, y, batch_size=batch_size, rng=r)
        )
    return functions


def benchmark(name: str, x: np.ndarray, y: np.ndarray, layers: list[tuple[int, str | None]],
              loss: str, batch_size: int, repeats: int, seed: int) -> dict[str, float]:
    """Time each path's epoch on one workload; return median seconds per epoch by path."""
    functions = _epoch_functions(x, y, layers, loss, batch_size, seed)
    first = {}
    for label, run in functions.items():
        start = time.perf_counter()
        run()
        first[label] = time.perf_counter() - start
    samples: dict[str, list[float]] = {label: [] for label in functions}
    for _ in range(repeats):
        for label, run in functions.items():
            start = time.perf_counter()
            run()
            samples[label].append(time.perf_counter() - start)
    medians = {label: statistics.median(times) for label, times in samples.items()}
    steps = -(-x.shape[0] // batch_size)
    print(f"\n{name}: {x.shape[0]} records x {x.shape[1]} features, batch {batch_size}, "
          f"{steps} steps per epoch, {repeats} timed epochs per path")
    print(f"  {'path':<20} {'first call s':>12} {'median s/epoch':>15} {'min s/epoch':>12} "
          f"{'x plain':>8}")
    for label, times in samples.items():
        print(f"  {label:<20} {first[label]:>12.3f} {medians[label]:>15.5f} {min(times):>12.5f} "
              f"{medians[label] / medians['plain']:>8.2f}")
    return medians


def main() -> None:
    """Parse arguments, run both workloads and print the tables and the target check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="timed epochs per path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)  # once per process, never per round
    x, y = _digits()
    digits = benchmark("digits", x, y, [(64, "relu"), (64, "relu"), (10, "softmax")],
                       "sparse_categorical_crossentropy", 64, args.repeats, args.seed)
    x, y = _logistic(args.seed)
    benchmark("logistic", x, y, [(1, "sigmoid")], "binary_crossentropy", 16,
              args.repeats, args.seed)
    ratio = digits["dp-dense_norms"] / digits["plain"]
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"\ntarget (DP epoch <= {TARGET_RATIO:g}x plain on digits, Dense shortcut): "
          f"{ratio:.2f}x, {verdict}")


if __name__ == "__main__":
    main()
