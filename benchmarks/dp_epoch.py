"""Benchmark: a DP-SGD epoch, fedcare against Opacus (hooks and ghost clipping), one run.

Run ``python -m benchmarks.dp_epoch [--threads 1] [--repeats 10] [--workloads ...]
[--onednn default|on|off]``.
Workloads (records, model, expected batch):

- logistic: 200 x 13 synthetic records, 13 -> 1 sigmoid (heart-disease's model shape), 16;
- digits-mlp: scikit-learn's bundled 8x8 digits (1797 x 64, pixels in [0, 1]), the digits
  task's MLP 64-64-10 softmax, 64;
- digits-cnn: the same records read as 8x8 images, the digits-cnn task's CNN (Conv2D(8, 3x3)
  -> Conv2D(16, 3x3) -> Flatten -> Dense(10)), 64;
- mnist-cnn: the digits upsampled to 28x28 (each pixel 3x3, 2 pixels of border), the CNN of
  Opacus's MNIST example (Conv 16 8x8/2 pad 3, max-pool 2/1, Conv 32 4x4/2, max-pool 2/1,
  Dense 32, Dense 10), 64.

Paths, each on its own copy of the model with the same initial weights: ``plain`` (fedcare's
compiled non-private epoch), ``fedcare-vmap`` (DP-SGD through ``tf.vectorized_map``: the
generic path, before the per-layer norms), ``fedcare-nojit`` (method "auto" with the
per-layer norms never XLA-compiled: for the 28x28 CNN the path before compilation; the same
as ``fedcare`` elsewhere), ``fedcare`` (DP-SGD, method "auto": the Dense shortcut for the
MLPs, ``client.ghost_clipping`` for the CNNs, compiled for the 28x28 one), ``opacus-hooks`` and
``opacus-ghost`` (Opacus ``PrivacyEngine.make_private`` with that ``grad_sample_mode``, SGD,
mean loss reduction, on torch copies of the Keras model whose outputs are checked equal). DP
paths use z = 1, C = 1 and draw each epoch's Poisson masks (q = batch / rows, ceil(rows /
batch) steps) with NumPy; Opacus's batches are indexed from tensors in memory, not drawn by
its DataLoader (which collates record by record): Opacus gets the faster loop.

Threads: both frameworks are pinned to ``--threads`` (default 1) before either runs an op:
OMP_NUM_THREADS and MKL_NUM_THREADS are set before torch is imported, then
``torch.set_num_threads`` / ``set_num_interop_threads`` and TensorFlow's intra- and inter-op
pools. On a loaded 2-core machine torch's OpenMP threads at 2 spin-wait for each other and
slow it several-fold, so 1 thread each is the fair and stable comparison.

TensorFlow's oneDNN kernels: ``--onednn default`` leaves TF_ENABLE_ONEDNN_OPTS as it is
(TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX; fedcare's
processes do not set it), ``on``/``off`` set it before TensorFlow is imported. Without them,
TensorFlow's CPU MaxPool gradient and convolutions are several times slower than torch's
(which uses oneDNN): the 28x28 CNN's plain epoch is then slower than Opacus's DP epoch.

Timing: each path runs (compiles, traces) once, then ``repeats`` rounds each run one epoch of
every path in turn, so load on the machine hits them alike; the median seconds per epoch is
reported with the load average before and after each workload. Targets: fedcare's epoch at
most 0.5x the faster Opacus mode on the MLP workloads and 0.6x on the CNNs.
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU only, as fedcare's commands run

TARGETS = {"logistic": 0.5, "digits-mlp": 0.5, "digits-cnn": 0.6, "mnist-cnn": 0.6}
DP_PATHS = ("fedcare-vmap", "fedcare-nojit", "fedcare", "opacus-hooks", "opacus-ghost")


@dataclass(frozen=True)
class Workload:
    """Records (rows, features) float32, labels (rows,), the Keras model builder, the loss."""

    name: str
    x: Any
    y: Any
    build: Callable[[], Any]
    loss: str
    batch_size: int


def pin_threads(threads: int, onednn: str) -> None:
    """Pin torch and TensorFlow to ``threads`` threads each and set TensorFlow's oneDNN
    switch (unless "default"); call before either is imported.
    """
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if onednn != "default":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn == "on" else "0"
    import warnings

    from common.quiet import quiet_third_party

    quiet_third_party()
    # torch's notice on every Opacus backward: the records themselves need no gradient
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)


def workloads(seed: int) -> dict[str, Workload]:
    """The four workloads of the module docstring."""
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    from common.models import build_model
    from common.tasks import get_task

    data = load_digits()
    digits = (data.data / 16.0).astype(np.float32)
    labels = data.target.astype(np.float32)
    images = np.kron(digits.reshape(-1, 8, 8), np.ones((3, 3), np.float32))
    mnist = np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(-1, 784)
    rng = np.random.default_rng(seed)
    logistic_x = rng.normal(size=(200, 13)).astype(np.float32)
    logistic_y = (logistic_x @ rng.normal(size=13) + 0.3 * rng.normal(size=200) > 0)

    def logistic() -> Any:
        return keras.Sequential([keras.Input((13,)), keras.layers.Dense(1, activation="sigmoid")])

    def mnist_cnn() -> Any:
        layers = keras.layers
        return keras.Sequential([
            keras.Input((784,)), layers.Reshape((28, 28, 1)), layers.ZeroPadding2D(3),
            layers.Conv2D(16, 8, strides=2, activation="relu"), layers.MaxPooling2D(2, 1),
            layers.Conv2D(32, 4, strides=2, activation="relu"), layers.MaxPooling2D(2, 1),
            layers.Flatten(), layers.Dense(32, activation="relu"),
            layers.Dense(10, activation="softmax")])

    categorical = "sparse_categorical_crossentropy"
    all_workloads = [
        Workload("logistic", logistic_x, logistic_y.astype(np.float32), logistic,
                 "binary_crossentropy", 16),
        Workload("digits-mlp", digits, labels,
                 lambda: build_model(get_task("digits"), seed=seed), categorical, 64),
        Workload("digits-cnn", digits, labels,
                 lambda: build_model(get_task("digits-cnn"), seed=seed), categorical, 64),
        Workload("mnist-cnn", mnist.astype(np.float32), labels, mnist_cnn, categorical, 64),
    ]
    return {w.name: w for w in all_workloads}


def fedcare_paths(work: Workload, weights: list[Any], seed: int) -> dict[str, Callable[[], Any]]:
    """``plain``, ``fedcare-vmap`` and ``fedcare`` epochs on copies of the model."""
    import keras
    import numpy as np

    from client.dp_sgd import DpSgdTrainer, make_plain_epoch_fn

    def model() -> Any:
        built = work.build()
        built.set_weights(weights)
        return built

    plain = make_plain_epoch_fn(model(), work.loss, keras.optimizers.SGD(0.05))  # type: ignore[arg-type]
    plain_rng = np.random.default_rng(seed)
    paths: dict[str, Callable[[], Any]] = {
        "plain": lambda: plain(work.x, work.y, batch_size=work.batch_size, rng=plain_rng)}
    for label, method, jit in (("fedcare-vmap", "vectorized_map", None),
                               ("fedcare-nojit", "auto", False), ("fedcare", "auto", None)):
        trainer = DpSgdTrainer(model(), loss=work.loss,  # type: ignore[arg-type]
                               optimizer=keras.optimizers.SGD(0.05), l2_norm_clip=1.0,
                               noise_multiplier=1.0, method=method,  # type: ignore[arg-type]
                               jit_compile=jit)
        rng = np.random.default_rng(seed)
        paths[label] = (lambda t=trainer, r=rng:
                        t.train(work.x, work.y, batch_size=work.batch_size, rng=r))
        if label == "fedcare":
            print(f"  fedcare's path on {work.name}: {trainer.method}")
    return paths


def opacus_paths(work: Workload, keras_model: Any, seed: int) -> dict[str, Callable[[], Any]]:
    """``opacus-hooks`` and ``opacus-ghost`` epochs on torch copies of ``keras_model``."""
    import warnings

    import numpy as np
    import torch
    from opacus import PrivacyEngine

    from benchmarks.torch_copy import torch_copy

    x, y = torch.from_numpy(work.x), torch.from_numpy(work.y)
    binary = work.loss == "binary_crossentropy"
    target = y if binary else y.long()
    rows, paths = len(x), {}
    steps = -(-rows // work.batch_size)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, target),
                                         batch_size=work.batch_size)
    for mode in ("hooks", "ghost"):
        module = torch_copy(keras_model)
        criterion: Any = torch.nn.BCEWithLogitsLoss() if binary else torch.nn.CrossEntropyLoss()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            made = PrivacyEngine().make_private(
                module=module, optimizer=torch.optim.SGD(module.parameters(), lr=0.05),
                criterion=criterion, data_loader=loader, noise_multiplier=1.0,
                max_grad_norm=1.0, grad_sample_mode=mode, poisson_sampling=True)
        model, optimizer = made[0], made[1]
        criterion = made[2] if mode == "ghost" else criterion
        rng = np.random.default_rng(seed)

        def epoch(model: Any = model, optimizer: Any = optimizer, criterion: Any = criterion,
                  rng: Any = rng) -> None:
            for mask in rng.random((steps, rows)) < work.batch_size / rows:
                index = torch.from_numpy(np.flatnonzero(mask))
                optimizer.zero_grad(set_to_none=True)
                out = model(x[index])
                loss = criterion(out[:, 0] if binary else out, target[index])
                loss.backward()
                optimizer.step()

        paths[f"opacus-{mode}"] = epoch
    return paths


def time_paths(paths: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float],
                                                                           dict[str, float]]:
    """First-call seconds and median seconds per epoch of each path, epochs interleaved."""
    first = {}
    for label, run in paths.items():
        start = time.perf_counter()
        run()
        first[label] = time.perf_counter() - start
    samples: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(repeats):
        for label, run in paths.items():
            start = time.perf_counter()
            run()
            samples[label].append(time.perf_counter() - start)
    return first, {label: statistics.median(times) for label, times in samples.items()}


def load() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def benchmark(work: Workload, repeats: int, seed: int) -> dict[str, float]:
    """Time every path on one workload, print its table, return median s/epoch by path."""
    import keras

    keras.utils.set_random_seed(seed)
    reference = work.build()
    paths = fedcare_paths(work, reference.get_weights(), seed)
    paths.update(opacus_paths(work, reference, seed))
    before = load()
    first, medians = time_paths(paths, repeats)
    rows = work.x.shape[0]
    faster = min(medians["opacus-hooks"], medians["opacus-ghost"])
    print(f"\n{work.name}: {rows} records x {work.x.shape[1]} features, batch "
          f"{work.batch_size}, {-(-rows // work.batch_size)} steps per epoch, {repeats} timed "
          f"epochs per path; load average {before} before, {load()} after")
    print(f"  {'path':<14} {'first call s':>12} {'median s/epoch':>15} {'x plain':>8} "
          f"{'x faster Opacus':>16}")
    for label in paths:
        print(f"  {label:<14} {first[label]:>12.3f} {medians[label]:>15.5f} "
              f"{medians[label] / medians['plain']:>8.2f} {medians[label] / faster:>16.2f}")
    return medians


def summary(results: dict[str, dict[str, float]], threads: int) -> None:
    """One line per workload: fedcare against Opacus's faster mode, and the target."""
    print(f"\nfedcare's DP epoch against Opacus's faster mode, {threads} thread(s) each; "
          f"load average {load()}")
    print(f"  {'workload':<11} {'fedcare s':>10} {'hooks s':>9} {'ghost s':>9} {'ratio':>6} "
          f"{'target':>7}  {'verdict':<8} {'vmap':>6} {'no XLA':>6} {'x plain':>8}")
    for name, medians in results.items():
        faster = min(medians["opacus-hooks"], medians["opacus-ghost"])
        ratio = medians["fedcare"] / faster
        verdict = "met" if ratio <= TARGETS[name] else "NOT met"
        print(f"  {name:<11} {medians['fedcare']:>10.4f} {medians['opacus-hooks']:>9.4f} "
              f"{medians['opacus-ghost']:>9.4f} {ratio:>6.2f} {TARGETS[name]:>7.2f}  "
              f"{verdict:<8} {medians['fedcare-vmap'] / faster:>6.2f} "
              f"{medians['fedcare-nojit'] / faster:>6.2f} "
              f"{medians['fedcare'] / medians['plain']:>8.2f}")
    print("  ratio: fedcare / the faster Opacus mode; vmap, no XLA: fedcare's vectorized_map "
          "path, its per-layer norms uncompiled / the same; x plain: fedcare's DP epoch / "
          "its plain epoch (DESIGN.md: <= 3 on digits)")


def main() -> None:
    """Parse arguments, pin threads, run the workloads and print the tables."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="threads for each framework")
    parser.add_argument("--repeats", type=int, default=10, help="timed epochs per path")
    parser.add_argument("--workloads", nargs="+", choices=tuple(TARGETS), default=list(TARGETS))
    parser.add_argument("--onednn", choices=("default", "on", "off"), default="default",
                        help="TensorFlow's TF_ENABLE_ONEDNN_OPTS (default: leave it as it is)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be >= 1")
    pin_threads(args.threads, args.onednn)
    import tensorflow as tf
    import torch
    from tensorflow.python.util import _pywrap_util_port

    onednn = "on" if _pywrap_util_port.IsMklEnabled() else "off"
    print(f"threads: TensorFlow intra-op {tf.config.threading.get_intra_op_parallelism_threads()}"
          f", inter-op {tf.config.threading.get_inter_op_parallelism_threads()}; torch "
          f"{torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}; TensorFlow's "
          f"oneDNN kernels {onednn} (--onednn {args.onednn}); load average {load()}")
    every = workloads(args.seed)
    results = {name: benchmark(every[name], args.repeats, args.seed) for name in args.workloads}
    summary(results, args.threads)


if __name__ == "__main__":
    main()
