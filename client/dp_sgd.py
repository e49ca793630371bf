"""Patient-level DP-SGD for Keras 3 models (Abadi et al. CCS 2016, Algorithm 1), compiled once.

Mechanism: Poisson-sample records at rate q, clip each per-example gradient to L2 norm C
(``client.per_example_clipping``), sum, add N(0, (zC)^2) per coordinate, divide by q*n.
Sensitivity: one record moves a step's sum by <= C. The adversary sees every iterate, so the
accounting uses (z, q, steps) with the event ``train`` returns. Unit: one patient's record.

Randomness: the Poisson masks and the Gaussian noise are both drawn from the injected
generator (a ``numpy.random.Generator`` in simulations, a ``common.dp.secure_random.
SecureRandom`` in deployment), in NumPy, and fed to the compiled step as tensors. The noise op
is always part of the compiled graph, with its stddev z*C a runtime tensor: what z a trainer
was first compiled at changes nothing about later calls.
"""

import math
from collections.abc import Callable
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from client.ghost_clipping import GhostPlan, ghost_plan
from client.per_example_clipping import (
    DenseLink,
    LossName,
    dense_chain,
    is_finite_number,
    make_clipped_sum,
    per_example_loss_fn,
    validate_records,
)
from common.dp.events import GaussianRoundEvent
from common.dp.secure_random import RandomSource, require_rng
from common.wire.modes import PrivacyLevel

__all__ = ["DpSgdTrainer", "LossName", "make_plain_epoch_fn", "per_example_loss_fn"]

Method = Literal["auto", "dense_norms", "ghost_norms", "vectorized_map"]
METHODS: tuple[Method, ...] = ("auto", "dense_norms", "ghost_norms", "vectorized_map")

_NOISE_CHUNK_FLOATS = 1 << 22  # 16 MiB of float32 noise per compiled call at most


class DpSgdTrainer:
    """Run DP-SGD epochs on a built Keras model; compiles once per feature shape.

    Parameters
    ----------
    model : keras.Model
        Built model; its trainable variables are updated in place.
    loss : {"binary_crossentropy", "sparse_categorical_crossentropy", "mse"}
        Per-example loss on the model's output (probabilities for the cross-entropies).
    optimizer : keras.optimizers.Optimizer
        Applied to the noisy mean gradient each step (built here if needed).
    l2_norm_clip : float
        C > 0, the per-example gradient L2 bound over all trainable variables together.
    noise_multiplier : float
        z >= 0; each step's gradient sum gets N(0, (z C)^2) per coordinate.
    method : {"auto", "dense_norms", "ghost_norms", "vectorized_map"}
        Per-example clipping path; "auto" uses the Dense norm shortcut whenever the model is a
        ``keras.Sequential`` of plain Dense layers, else the per-layer norms of
        ``client.ghost_clipping`` when its Dense/Conv2D layers are covered, else
        ``tf.vectorized_map``.
    jit_compile : bool, optional
        For the per-layer norms only: run them XLA-compiled (True) or not (False); by default
        as ``client.ghost_clipping.ghost_plan`` decides from the model's cost per record.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        loss: LossName,
        optimizer: keras.optimizers.Optimizer,
        l2_norm_clip: float,
        noise_multiplier: float,
        method: Method = "auto",
        jit_compile: bool | None = None,
    ) -> None:
        if not is_finite_number(l2_norm_clip) or not l2_norm_clip > 0:
            raise ValueError(f"l2_norm_clip must be > 0 and finite, got {l2_norm_clip!r}")
        if not is_finite_number(noise_multiplier) or not noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0 and finite, got {noise_multiplier!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self._optimizer = optimizer
        self._loss_fn = per_example_loss_fn(loss)
        self._variables = list(model.trainable_variables)
        if not self._variables:
            raise ValueError("model must be built and have trainable variables")
        self._clip, self._z = float(l2_norm_clip), float(noise_multiplier)
        self._method, path = _clipping_path(model, self._variables, method, jit_compile)
        self._clipped_sum = make_clipped_sum(model, self._loss_fn, self._variables, path)
        if not optimizer.built:
            optimizer.build(self._variables)
        self._num_parameters = sum(int(np.prod(v.shape)) for v in self._variables)
        self._compiled: dict[tuple[int, ...], dict[str, Any]] = {}

    def set_privacy(self, *, l2_norm_clip: float, noise_multiplier: float) -> None:
        """Set C and z for the next steps; both enter the compiled step as tensors (no retrace)."""
        if not is_finite_number(l2_norm_clip) or not l2_norm_clip > 0:
            raise ValueError(f"l2_norm_clip must be > 0 and finite, got {l2_norm_clip!r}")
        if not is_finite_number(noise_multiplier) or not noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0 and finite, got {noise_multiplier!r}")
        self._clip, self._z = float(l2_norm_clip), float(noise_multiplier)

    @property
    def method(self) -> str:
        """The per-example clipping path in use: dense_norms, ghost_norms or vectorized_map."""
        return self._method

    @property
    def l2_norm_clip(self) -> float:
        """C, the per-example gradient L2 bound."""
        return self._clip

    @property
    def noise_multiplier(self) -> float:
        """z, the noise stddev in units of C."""
        return self._z

    @property
    def trace_count(self) -> int:
        """How often the compiled functions were traced (once per feature shape if healthy)."""
        return sum(
            function.experimental_get_tracing_count()
            for functions in self._compiled.values()
            for function in functions.values()
        )

    def train(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int,
        rng: RandomSource,
        epochs: int = 1,
        steps: int | None = None,
    ) -> GaussianRoundEvent:
        """Run DP-SGD and return the accounting event of exactly what was applied.

        Parameters
        ----------
        x, y : np.ndarray
            The hospital's training records, shapes (rows, features...) and (rows,), finite.
        batch_size : int
            Expected batch size; q = min(1, batch_size / rows).
        rng : numpy.random.Generator or SecureRandom
            Draws the Poisson masks (shape (steps, rows)) and then the noise. In deployment
            pass a ``SecureRandom()`` (keyed from OS entropy), never a server-seeded generator.
        epochs : int
            Epochs of ceil(rows / batch_size) steps each, when ``steps`` is not given.
        steps : int, optional
            Exact number of DP-SGD steps, overriding ``epochs``.

        Returns
        -------
        GaussianRoundEvent
            level "patient", the noise multiplier z the steps applied (read once, at the
            start), sample rate q and the steps taken.
        """
        features, labels = validate_records(x, y)
        rows = features.shape[0]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        require_rng(rng)
        clip, z = self._clip, self._z  # one reading: what is applied is what is returned
        if steps is None:
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
                raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
            steps = epochs * math.ceil(rows / batch_size)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        sample_rate = min(1.0, batch_size / rows)
        masks = rng.random((steps, rows)) < sample_rate  # Poisson: each record independently
        self._run(features, labels, masks, sample_rate, rng, clip=clip, noise_multiplier=z)
        return GaussianRoundEvent(
            noise_multiplier=z, sample_rate=sample_rate, steps=steps, level=PrivacyLevel.PATIENT
        )

    def run_steps(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        masks: np.ndarray,
        sample_rate: float,
        rng: RandomSource,
    ) -> None:
        """Run one DP-SGD step per row of ``masks`` (bool, shape (steps, rows)).

        The masks must be Poisson draws at ``sample_rate`` for the accounting to hold; the
        gradient sum is divided by ``sample_rate * rows``. The noise, N(0, (zC)^2) per
        coordinate and step at the current ``noise_multiplier`` and ``l2_norm_clip``, is
        drawn from ``rng`` (nothing is drawn when z = 0).
        """
        features, labels = validate_records(x, y)
        require_rng(rng)
        self._run(features, labels, masks, sample_rate, rng, clip=self._clip,
                  noise_multiplier=self._z)

    def _run(self, features: np.ndarray, labels: np.ndarray, masks: np.ndarray,
             sample_rate: float, rng: RandomSource, *, clip: float,
             noise_multiplier: float) -> None:
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 2 or masks.shape[1] != features.shape[0]:
            raise ValueError(
                f"masks must have shape (steps, {features.shape[0]}), got {masks.shape}"
            )
        if not is_finite_number(sample_rate) or not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        epoch = self._functions(features.shape[1:])["epoch"]
        constants = (
            tf.constant(clip, tf.float32),
            tf.constant(noise_multiplier * clip, tf.float32),
            tf.constant(sample_rate * features.shape[0], tf.float32),
        )
        # Standard normals for a chunk of steps come from rng in one call (shape (steps,
        # parameters), float32) and are scaled by the stddev tensor inside the graph;
        # chunking caps their memory at _NOISE_CHUNK_FLOATS floats.
        chunk = max(1, _NOISE_CHUNK_FLOATS // self._num_parameters)
        for start in range(0, masks.shape[0], chunk):
            part = masks[start : start + chunk]
            shape = (part.shape[0], self._num_parameters)
            if noise_multiplier > 0:
                noise = rng.standard_normal(shape, dtype=np.float32)
            else:
                noise = np.zeros(shape, np.float32)  # stddev 0: the op still runs
            epoch(features, labels, part, noise, *constants)

    def clipped_gradient_sum(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        """Return the sum of per-example gradients clipped to C, without noise (not private)."""
        return [g.numpy() for g in self._clipped_and_norms(x, y)[0]]

    def per_example_norms(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return each record's unclipped gradient L2 norm, shape (rows,) (not private)."""
        return np.asarray(self._clipped_and_norms(x, y)[1].numpy())

    def _clipped_and_norms(self, x: np.ndarray, y: np.ndarray) -> tuple[list[Any], Any]:
        features, labels = validate_records(x, y)
        run = self._functions(features.shape[1:])["clipped_sum"]
        sums, norms = run(features, labels, tf.constant(self._clip, tf.float32))
        return list(sums), norms

    def _functions(self, feature_shape: tuple[int, ...]) -> dict[str, Any]:
        if feature_shape not in self._compiled:
            self._compiled[feature_shape] = self._compile(feature_shape)
        return self._compiled[feature_shape]

    def _compile(self, feature_shape: tuple[int, ...]) -> dict[str, Any]:
        x_spec = tf.TensorSpec([None, *feature_shape], tf.float32)
        y_spec = tf.TensorSpec([None], tf.float32)
        scalar = tf.TensorSpec([], tf.float32)
        clipped = self._clipped_sum
        shapes = [list(v.shape) for v in self._variables]
        sizes = [int(np.prod(shape)) for shape in shapes]

        def epoch(x: Any, y: Any, masks: Any, noise: Any, clip: Any, stddev: Any,
                  expected_batch: Any) -> Any:
            steps = tf.shape(masks)[0]

            def body(step: Any) -> tuple[Any]:
                index = tf.where(masks[step])[:, 0]
                sums, _ = clipped(tf.gather(x, index), tf.gather(y, index), clip)
                draws = tf.split(noise[step], sizes)
                noisy = [
                    (total + stddev * tf.reshape(draws[j], shapes[j])) / expected_batch
                    for j, total in enumerate(sums)
                ]
                self._optimizer.apply(noisy, self._variables)
                return (step + 1,)

            return tf.while_loop(lambda step: step < steps, body, (tf.constant(0),),
                                 parallel_iterations=1)[0]

        epoch_signature = [x_spec, y_spec, tf.TensorSpec([None, None], tf.bool),
                           tf.TensorSpec([None, sum(sizes)], tf.float32),
                           scalar, scalar, scalar]
        return {
            "epoch": tf.function(epoch, input_signature=epoch_signature, autograph=False),
            "clipped_sum": tf.function(clipped, input_signature=[x_spec, y_spec, scalar],
                                       autograph=False),
        }


def _clipping_path(model: keras.Model, variables: list[Any], method: Method,
                   jit_compile: bool | None) -> tuple[str, list[DenseLink] | GhostPlan | None]:
    """The path ``method`` names (or "auto" picks) and what it needs; ValueError if unusable."""
    if method == "vectorized_map":
        return "vectorized_map", None
    chain = dense_chain(model, variables) if method in ("auto", "dense_norms") else None
    if chain is not None:
        return "dense_norms", chain
    if method == "dense_norms":
        raise ValueError("method 'dense_norms' needs a keras.Sequential of Dense layers only")
    plan = ghost_plan(model, variables, compiled=jit_compile)
    if plan is not None:
        return "ghost_norms", plan
    if method == "ghost_norms":
        raise ValueError("method 'ghost_norms' needs a keras.Sequential of Dense and Conv2D "
                         "layers with per-record weightless layers between them")
    return "vectorized_map", None


def make_plain_epoch_fn(
    model: keras.Model, loss: LossName, optimizer: keras.optimizers.Optimizer
) -> Callable[..., None]:
    """Return ``epoch(x, y, *, batch_size, rng)``: one shuffled non-private epoch, compiled once.

    Each step applies the mean loss gradient of a batch of ``batch_size`` records (the last
    batch may be smaller). For comparison with DP-SGD only; it gives no privacy.
    """
    loss_fn, variables = per_example_loss_fn(loss), list(model.trainable_variables)
    if not optimizer.built:
        optimizer.build(variables)

    def run(x: Any, y: Any, order: Any, batch_size: Any) -> Any:
        rows = tf.shape(x)[0]

        def body(start: Any) -> tuple[Any]:
            index = order[start:tf.minimum(start + batch_size, rows)]
            with tf.GradientTape() as tape:
                mean = tf.reduce_mean(loss_fn(tf.gather(y, index),
                                              model(tf.gather(x, index), training=True)))
            optimizer.apply(tape.gradient(mean, variables), variables)
            return (start + batch_size,)

        return tf.while_loop(lambda start: start < rows, body, (tf.constant(0),),
                             parallel_iterations=1)[0]

    compiled: dict[tuple[int, ...], Any] = {}

    def epoch(x: np.ndarray, y: np.ndarray, *, batch_size: int, rng: np.random.Generator) -> None:
        features, labels = validate_records(x, y)
        shape = features.shape[1:]
        if shape not in compiled:
            compiled[shape] = tf.function(run, autograph=False, input_signature=[
                tf.TensorSpec([None, *shape], tf.float32), tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)])
        order = rng.permutation(features.shape[0]).astype(np.int32)
        compiled[shape](features, labels, order, tf.constant(batch_size, tf.int32))

    return epoch
