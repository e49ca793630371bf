"""Per-example gradient norms and clipped sums for Sequential Dense/Conv2D models, no vmap.

Mechanism (DP-SGD's sensitivity bound, as in ``client.per_example_clipping``): record i's
gradient g_i over all trainable variables is scaled by c_i = min(1, C/||g_i||) before the
records are summed, so one record moves the sum by <= C. Unit of privacy: one record.

How, for a ``keras.Sequential`` whose weighted layers are Dense and Conv2D (weightless
per-record layers such as Reshape, Flatten or pooling may sit between them):

1. One forward pass records each weighted layer's input a and pre-activation output z; one
   backward pass of sum_i L_i to the z's gives G_i = dL_i/dz_i for every record at once
   (records never mix: no layer here couples them). Nothing needs the records' own gradient,
   so a first Conv2D is computed as its patches times the kernel: the patches are needed for
   step 2 anyway, and one matmul is cheaper than TensorFlow's CPU convolution.
2. Each weighted layer's kernel gradient for record i is A_i^T G_i, where A_i (T x d) holds
   the layer's inputs at its T output positions (for a Conv2D, the unfolded kh x kw x c_in
   input patches, d = kh*kw*c_in; for a Dense, T = 1 on rank-2 input, else the positions
   of its leading axes) and G_i is T x p (p = filters or units); its bias gradient is 1^T G_i.
   Its squared norm is computed by one of two rules, chosen per layer when the plan is made
   from the static shapes (cost per record, in multiply-adds):

   - "gram" (ghost clipping; Goodfellow 2015, arXiv:1510.01799 for T = 1; Li et al. ICLR
     2022, Section 4): ||A_i^T G_i||^2 + ||1^T G_i||^2 = <A_i A_i^T + 1, G_i G_i^T>, the
     Frobenius product of two T x T Gram matrices, about T^2 (d + p); with T = 1 it is
     (||a_i||^2 + 1) ||g_i||^2;
   - "per_example": the d x p gradient A_i^T G_i itself, about T d p, then its norm.

   The rule picks "gram" when 2 T (d + p) < d p (and always for T = 1), else "per_example"
   (the per-layer choice of "mixed ghost clipping", Bu et al. 2022, arXiv:2210.00038). The
   factor 2 is measured: with TensorFlow 2.21 on one CPU thread, batch 64, the per-example
   batched matmul ran about twice as many multiply-adds a second as the two Gram matmuls and
   their product, over ten shapes from (T, d, p) = (36, 9, 8) to (4, 2048, 64); the rule
   picks the faster one on all ten. For the digits CNN (8x8 -> Conv2D(8, 3x3) ->
   Conv2D(16, 3x3) -> Flatten -> Dense(10)) that is per_example, per_example, gram (T = 1);
   for Opacus's MNIST CNN per_example, per_example, gram, gram. Opacus 1.6's ghost mode has
   no norm rule for Conv2d: it materialises conv layers' per-sample gradients always.
3. The clipped sum is the second, weighted backward pass of ghost clipping: the gradient of
   sum_i c_i L_i with c held constant. Its output gradients are c_i G_i, already known, so
   only each layer's weight-gradient step runs again: sum_i c_i A_i^T G_i as one matmul of
   the stacked A against the stacked c_i G_i (or sum_i c_i (A_i^T G_i) for a layer whose
   per-record gradients were materialised), and sum_i c_i 1^T G_i for the bias; nothing is
   propagated through the activations a second time.

4. Compilation: a plan whose weighted layers cost >= ``COMPILE_MIN_MACS`` (10^5) multiply-adds
   per record (sum of T d p; Opacus's MNIST CNN 4.2e5, the digits CNN 2.4e4) runs the three
   steps above XLA-compiled (``jit_compile``) in fixed chunks of ``CHUNK_ROWS`` records, the
   last padded with absent records (weight 0), so one program serves every Poisson batch size.
   There max-pooling is a maximum of strided slices (the same values; the gradient to the
   first maximum of each window, as TensorFlow's MaxPool gradient) and patches are strided
   slices (for a stride-s convolution whose kernel sides are multiples of s, space-to-depth
   blocks, the kernel's rows permuted to their order), all fused by XLA; TensorFlow's own
   CPU MaxPool gradient and XLA's lowering of ``extract_patches`` (a convolution) are each
   slower than the whole rest of the step.
   Smaller plans run uncompiled: XLA's compilation (2-3 CPU s once) and per-call cost would
   outweigh the saving.

Squared norms are sums of float32 products; a Gram product that rounds below zero is taken
as zero. Models this does not cover (other weighted layers, shared layers, LoRA, grouped or
channels-first convolutions, Dropout, activations other than Keras's own) get no plan, and
the caller falls back to ``tf.vectorized_map``, which runs the model on each record alone.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import keras
import tensorflow as tf

__all__ = ["GhostPlan", "WeightedLayer", "compiled_clipped_sum", "ghost_clipped_sum",
           "ghost_plan", "per_record_activation"]

NormRule = Literal["gram", "per_example"]
CHUNK_ROWS = 16  # rows per XLA call of ``compiled_clipped_sum``
COMPILE_MIN_MACS = 100_000  # per-record forward multiply-adds from which a plan is XLA-compiled
_MAX_SLICED_TAPS = 16  # kernel taps up to which patches are strided slices without XLA
LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

# Keras's element-wise (or last-axis) activations: none looks at another record. A callable
# of the user's own could (a batch mean, say), and would break the per-record bound.
_PER_RECORD_ACTIVATIONS = frozenset(
    keras.activations.get(name) for name in (
        "elu", "exponential", "gelu", "hard_sigmoid", "leaky_relu", "linear", "log_softmax",
        "relu", "relu6", "selu", "sigmoid", "silu", "softmax", "softplus", "softsign", "tanh"))
# Weightless layers that act on each record on its own (no batch statistics, no randomness).
_PER_RECORD_LAYERS = (
    keras.layers.Activation, keras.layers.AveragePooling2D, keras.layers.Flatten,
    keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
    keras.layers.MaxPooling2D, keras.layers.ReLU, keras.layers.Rescaling, keras.layers.Reshape,
    keras.layers.ZeroPadding2D,
)


@dataclass(frozen=True, slots=True)
class WeightedLayer:
    """A Dense or Conv2D layer of the plan: its variables' positions and its norm rule.

    ``spatial`` holds the output's positions per record along each axis (empty for a Dense
    on rank-2 input), ``depth`` is d (inputs per position), ``width`` p (output channels or
    units).
    """

    layer: Any
    kernel: int
    bias: int | None
    spatial: tuple[int, ...]
    depth: int
    width: int
    rule: NormRule
    order: tuple[int, ...] | None = None

    @property
    def positions(self) -> int:
        """T, the output positions per record."""
        return math.prod(self.spatial)


@dataclass(frozen=True, slots=True)
class GhostPlan:
    """The model's layers in order: weightless ones as they are, weighted ones as plans.

    ``compiled``: the clipped sum runs XLA-compiled in fixed-size chunks
    (``compiled_clipped_sum``), max-pooling and patches as strided slices.
    """

    steps: tuple[Any, ...]
    num_variables: int
    compiled: bool = False

    @property
    def weighted(self) -> list[WeightedLayer]:
        """The weighted layers, in order."""
        return [step for step in self.steps if isinstance(step, WeightedLayer)]


def per_record_activation(layer: Any) -> bool:
    """Whether the layer's activation is one of Keras's own, each acting on one record."""
    activation = getattr(layer, "activation", None)
    return activation is None or activation in _PER_RECORD_ACTIVATIONS


def choose_rule(positions: int, depth: int, width: int) -> NormRule:
    """The faster norm rule per record: "gram" when 2 T (d + p) < d p or T = 1."""
    if positions == 1 or 2 * positions * (depth + width) < depth * width:
        return "gram"
    return "per_example"


def ghost_plan(model: keras.Model, variables: list[Any], *, rule: NormRule | None = None,
               compiled: bool | None = None) -> GhostPlan | None:
    """Return the plan for a ``keras.Sequential`` this module covers, else None.

    Covered: plain Dense layers and Conv2D layers (channels_last, groups 1, no LoRA or
    quantisation), each used once, with per-record weightless layers between them, whose
    kernels and biases are exactly ``variables``. ``rule`` forces one norm rule for every
    layer with T > 1 (tests); by default each gets the faster one (``choose_rule``).
    ``compiled`` forces XLA on or off; by default it is on when the weighted layers' forward
    pass costs >= ``COMPILE_MIN_MACS`` multiply-adds per record (``sum T d p``): below that,
    XLA's one-off compilation (2-3 CPU s) and per-call cost outweigh what it saves.
    """
    if not isinstance(model, keras.Sequential):
        return None
    try:
        shape = tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, ValueError):
        return None
    index = {id(v): i for i, v in enumerate(variables)}
    steps: list[Any] = []
    seen: set[int] = set()
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if not per_record_activation(layer):
            return None
        if type(layer) in _PER_RECORD_LAYERS and not layer.weights:
            steps.append(layer)
        else:
            step = _weighted(layer, index, shape, rule)
            if step is None or step.kernel in seen or step.bias in seen:
                return None
            seen.update(i for i in (step.kernel, step.bias) if i is not None)
            steps.append(step)
        shape = tuple(layer.compute_output_shape(shape))
    if not seen or len(seen) != len(variables):
        return None
    if compiled is None:
        weighted = [step for step in steps if isinstance(step, WeightedLayer)]
        compiled = sum(s.positions * s.depth * s.width for s in weighted) >= COMPILE_MIN_MACS
    if compiled:
        steps = [replace(step, order=_blocked_order(step)) if isinstance(step, WeightedLayer)
                 else step for step in steps]
    return GhostPlan(tuple(steps), len(variables), compiled)


def _weighted(layer: Any, index: dict[int, int], shape: tuple[Any, ...],
              rule: NormRule | None) -> WeightedLayer | None:
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return None
    if type(layer) is keras.layers.Dense:
        depth, width = int(layer.kernel.shape[0]), int(layer.units)
        spatial = shape[1:-1]
    elif type(layer) is keras.layers.Conv2D:
        if layer.groups != 1 or layer.data_format != "channels_last" or len(shape) != 4:
            return None
        kh, kw, channels, width = (int(n) for n in layer.kernel.shape)
        depth = kh * kw * channels
        spatial = tuple(layer.compute_output_shape(shape))[1:-1]
    else:
        return None
    if any(n is None for n in spatial):
        return None
    kernel = index.get(id(layer.kernel))
    bias = index.get(id(layer.bias)) if layer.bias is not None else None
    if kernel is None or (layer.bias is not None and bias is None):
        return None
    sizes = tuple(int(n) for n in spatial)
    chosen = rule or choose_rule(math.prod(sizes), depth, width)
    return WeightedLayer(layer, kernel, bias, sizes, depth, width, chosen)


def ghost_clipped_sum(plan: GhostPlan, loss_fn: LossFn, x: Any, y: Any, clip: Any,
                      present: Any = None) -> tuple[list[Any], Any]:
    """Return (clipped sums, norms) for records ``x`` (rows, ...) and labels ``y`` (rows,).

    ``sums[j]`` has the shape of variable j and is sum_i min(1, clip / n_i) g_ij; ``norms``
    (rows,) holds n_i = ||g_i|| over all variables. ``present`` (rows,), 1.0 or 0.0, drops the
    rows marked 0 (padding): their loss is multiplied by 0, so their gradient, norm and share
    of the sums are 0. For use inside a ``tf.function``.
    """
    rows = tf.shape(x)[0]
    patches, grads = _first_pass(plan, loss_fn, x, y, rows, present)
    squared = tf.zeros([rows], tf.float32)
    layers = []
    for step, a, g in zip(plan.weighted, patches, grads, strict=True):
        outputs = tf.reshape(g, [rows, step.positions, step.width])
        part, per_example = _squared_norms(step, a, outputs)
        squared += part
        layers.append((a, outputs, per_example))
    norms = tf.sqrt(squared)
    factor = clip / tf.maximum(norms, clip)
    sums: list[Any] = [None] * plan.num_variables
    for step, (a, outputs, per_example) in zip(plan.weighted, layers, strict=True):
        weighted = outputs * factor[:, None, None]
        if per_example is None:  # sum_i c_i A_i^T G_i as one (d x rows*T) @ (rows*T x p)
            kernel = tf.matmul(tf.reshape(a, [-1, step.depth]),
                               tf.reshape(weighted, [-1, step.width]), transpose_a=True)
        else:  # sum_i c_i (G_i^T A_i), transposed
            kernel = tf.transpose(tf.tensordot(factor, per_example, axes=1))
        if step.order is not None:  # rows back from the blocked patches' order
            kernel = tf.gather(kernel, _inverse(step.order))
        sums[step.kernel] = tf.reshape(kernel, list(step.layer.kernel.shape))
        if step.bias is not None:
            sums[step.bias] = tf.reduce_sum(weighted, axis=[0, 1])
    return sums, norms


def _first_pass(plan: GhostPlan, loss_fn: LossFn, x: Any, y: Any, rows: Any,
                present: Any) -> tuple[list[Any], list[Any]]:
    """Forward once; each weighted layer's unfolded input (rows, T, d) and dL_i/dz_i."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        a = x
        inputs: list[Any] = []
        pre_activations: list[Any] = []
        for step in plan.steps:
            if not isinstance(step, WeightedLayer):
                a = _max_pool(step, a) if plan.compiled and _sliced_pool(step, a) else step(a)
                continue
            layer = step.layer
            if type(layer) is not keras.layers.Conv2D:
                inputs.append(a)
                z = keras.ops.matmul(a, layer.kernel)
            elif pre_activations:  # a depends on the weights: keep the convolution's gradient
                inputs.append(a)
                z = layer.convolution_op(a, layer.kernel)
            else:  # the records' patches: no gradient flows into them
                inputs.append(_unfold(plan, step, a, rows))
                kernel = tf.reshape(layer.kernel, [step.depth, step.width])
                if step.order is not None:
                    kernel = tf.gather(kernel, step.order)
                z = tf.reshape(tf.matmul(tf.reshape(inputs[-1], [-1, step.depth]), kernel),
                               [rows, *step.spatial, step.width])
            if layer.bias is not None:
                z = z + layer.bias
            tape.watch(z)
            pre_activations.append(z)
            a = layer.activation(z)
        losses = loss_fn(y, a)
        total = tf.reduce_sum(losses if present is None else losses * present)
    grads = tape.gradient(total, pre_activations)
    first_conv = type(plan.weighted[0].layer) is keras.layers.Conv2D
    patches = [a if index == 0 and first_conv else _unfold(plan, step, a, rows)
               for index, (step, a) in enumerate(zip(plan.weighted, inputs, strict=True))]
    return patches, grads


def _unfold(plan: GhostPlan, step: WeightedLayer, a: Any, rows: Any) -> Any:
    """The layer's input as (rows, T, d): conv patches in the kernel's (kh, kw, c_in) order.

    "valid" patches are strided slices (``_sliced_patches``) in a compiled plan or for at
    most ``_MAX_SLICED_TAPS`` taps, else ``tf.image.extract_patches``.
    """
    layer = step.layer
    if type(layer) is keras.layers.Conv2D:
        kh, kw = layer.kernel_size
        sh, sw = layer.strides
        dh, dw = layer.dilation_rate
        sliced = plan.compiled or kh * kw <= _MAX_SLICED_TAPS
        if sliced and layer.padding == "valid" and None not in a.shape[1:3]:
            a = (_sliced_patches(a, (kh, kw), (sh, sw), (dh, dw), step.spatial)
                 if step.order is None else _blocked_patches(a, (kh, kw), sh, step.spatial))
        else:
            a = tf.image.extract_patches(a, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1],
                                         rates=[1, dh, dw, 1], padding=layer.padding.upper())
    return tf.reshape(a, [rows, step.positions, step.depth])


def _squared_norms(step: WeightedLayer, patches: Any, outputs: Any) -> tuple[Any, Any]:
    """Per-record squared gradient norm of one layer, and its per-record kernel gradients
    transposed, (rows, p, d), when the rule materialises them (else None).
    """
    bias = 0.0 if step.bias is None else 1.0
    if step.positions == 1:
        a, g = patches[:, 0, :], outputs[:, 0, :]
        return (tf.reduce_sum(tf.square(a), axis=1) + bias) * tf.reduce_sum(tf.square(g),
                                                                           axis=1), None
    if step.rule == "gram":
        gram_a = tf.matmul(patches, patches, transpose_b=True) + bias
        gram_g = tf.matmul(outputs, outputs, transpose_b=True)
        return tf.maximum(tf.reduce_sum(gram_a * gram_g, axis=[1, 2]), 0.0), None
    # G_i^T A_i: TensorFlow's batched matmul is ~2x faster this way round than A_i^T G_i
    per_example = tf.matmul(outputs, patches, transpose_a=True)
    squared = tf.reduce_sum(tf.square(per_example), axis=[1, 2])
    if step.bias is not None:
        squared += tf.reduce_sum(tf.square(tf.reduce_sum(outputs, axis=1)), axis=1)
    return squared, per_example


def _sliced_pool(step: Any, a: Any) -> bool:
    """Whether ``step`` is a "valid", channels_last MaxPooling2D of at most 16 taps on a
    rank-4 input of static height and width (``_max_pool`` computes it).
    """
    return (type(step) is keras.layers.MaxPooling2D and step.padding == "valid"
            and step.data_format == "channels_last" and a.shape.rank == 4
            and a.shape[1] is not None and a.shape[2] is not None
            and math.prod(step.pool_size) <= _MAX_SLICED_TAPS)


def _max_pool(layer: Any, a: Any) -> Any:
    """``layer(a)`` for a MaxPooling2D ``_sliced_pool`` accepts, as a maximum of strided slices.

    The values are the layer's exactly (a maximum is exact). The gradient goes, in each window,
    to the first maximal tap in row-major order (``tf.maximum`` gives a tie to its first
    argument), as TensorFlow's MaxPool gradient does; under XLA it is a few fused selects
    instead of a select-and-scatter, several times faster on CPU.
    """
    (ph, pw), (sh, sw) = layer.pool_size, layer.strides
    height, width = (int(a.shape[1]) - ph) // sh + 1, (int(a.shape[2]) - pw) // sw + 1
    out = None
    for i in range(ph):
        for j in range(pw):
            tap = a[:, i : i + sh * (height - 1) + 1 : sh, j : j + sw * (width - 1) + 1 : sw, :]
            out = tap if out is None else tf.maximum(out, tap)
    return out


def compiled_clipped_sum(plan: GhostPlan, loss_fn: LossFn, *, chunk: int = CHUNK_ROWS,
                         jit: bool = True) -> Callable[[Any, Any, Any], Any]:
    """Return ``f(x, y, clip) -> (sums, norms)`` as ``ghost_clipped_sum``, XLA-compiled once.

    The batch is cut into chunks of ``chunk`` rows, the last padded with zero records marked
    absent (``present`` 0: no loss, no gradient, no share of the sums); each chunk runs one
    ``jit_compile`` function of fixed shape, so a Poisson batch of any size reuses one XLA
    program per feature shape (no recompilation), and the chunks' sums are added. Records
    never mix, so the result is ``ghost_clipped_sum`` on the whole batch up to float32
    summation order. For use inside a ``tf.function``.
    """
    compiled = tf.function(
        lambda x, y, present, clip: ghost_clipped_sum(plan, loss_fn, x, y, clip, present),
        jit_compile=jit, autograph=False)
    shapes = _variable_shapes(plan)

    def run(x: Any, y: Any, clip: Any) -> tuple[list[Any], Any]:
        rows = tf.shape(x)[0]
        chunks = (rows + chunk - 1) // chunk
        pad = chunks * chunk - rows
        features = list(x.shape[1:])
        xs = tf.reshape(tf.pad(x, [[0, pad]] + [[0, 0]] * len(features)),
                        [chunks, chunk, *features])
        ys = tf.reshape(tf.pad(y, [[0, pad]]), [chunks, chunk])
        present = tf.reshape(tf.pad(tf.ones([rows], tf.float32), [[0, pad]]), [chunks, chunk])

        def body(k: Any, norms: Any, *sums: Any) -> tuple[Any, ...]:
            part, part_norms = compiled(xs[k], ys[k], present[k], clip)
            return (k + 1, norms.write(k, part_norms),
                    *(total + add for total, add in zip(sums, part, strict=True)))

        start = (tf.constant(0), tf.TensorArray(tf.float32, size=chunks, element_shape=[chunk]),
                 *(tf.zeros(shape) for shape in shapes))
        _, norms, *sums = tf.while_loop(lambda k, *_: k < chunks, body, start,
                                        parallel_iterations=1)
        return list(sums), tf.reshape(norms.stack(), [-1])[:rows]

    return run


def _variable_shapes(plan: GhostPlan) -> list[list[int]]:
    """Each variable's shape, in the variables' order."""
    shapes: list[list[int]] = [[] for _ in range(plan.num_variables)]
    for step in plan.weighted:
        shapes[step.kernel] = [int(n) for n in step.layer.kernel.shape]
        if step.bias is not None:
            shapes[step.bias] = [int(n) for n in step.layer.bias.shape]
    return shapes


def _sliced_patches(a: Any, kernel: tuple[int, int], strides: tuple[int, int],
                    dilation: tuple[int, int], spatial: tuple[int, ...]) -> Any:
    """"valid" patches of ``a`` (rows, h, w, c) as (rows, h', w', kh*kw*c), in
    ``tf.image.extract_patches``'s (kh, kw, c) order: one strided slice per kernel tap,
    concatenated (under XLA a fused copy; XLA lowers extract_patches to a convolution).
    """
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilation
    height, width = spatial
    taps = [a[:, i * dh : i * dh + sh * (height - 1) + 1 : sh,
              j * dw : j * dw + sw * (width - 1) + 1 : sw, :]
            for i in range(kh) for j in range(kw)]
    return tf.concat(taps, axis=-1)


def _blocked_order(step: WeightedLayer) -> tuple[int, ...] | None:
    """For a "valid" Conv2D of stride s > 1 (the same both ways, no dilation) whose kernel
    sides are multiples of s: the kernel rows, (kh, kw, c_in) flattened, in the order of
    ``_blocked_patches``'s features; else None.
    """
    layer = step.layer
    if type(layer) is not keras.layers.Conv2D or layer.padding != "valid":
        return None
    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    if sh != sw or sh == 1 or kh % sh or kw % sh or tuple(layer.dilation_rate) != (1, 1):
        return None
    s, channels = sh, int(layer.kernel.shape[2])
    return tuple(((bi * s + di) * kw + bj * s + dj) * channels + c
                 for bi in range(kh // s) for bj in range(kw // s)
                 for di in range(s) for dj in range(s) for c in range(channels))


def _blocked_patches(a: Any, kernel: tuple[int, int], stride: int,
                     spatial: tuple[int, ...]) -> Any:
    """"valid" stride-s patches as ``tf.nn.space_to_depth`` by s, then (kh/s) x (kw/s)
    stride-1 slices: features in ``_blocked_order``, few wide slices instead of kh*kw narrow
    ones (under XLA about half the time of ``_sliced_patches`` for an 8x8 kernel on 1 channel).
    """
    (kh, kw), (height, width) = kernel, spatial
    cropped = a[:, : stride * (height - 1) + kh, : stride * (width - 1) + kw, :]
    blocks = tf.nn.space_to_depth(cropped, stride)
    return tf.concat([blocks[:, i : i + height, j : j + width, :]
                      for i in range(kh // stride) for j in range(kw // stride)], axis=-1)


def _inverse(order: tuple[int, ...]) -> list[int]:
    """The permutation undoing ``order``: ``x[order][_inverse(order)] == x``."""
    inverse = [0] * len(order)
    for position, row in enumerate(order):
        inverse[row] = position
    return inverse
