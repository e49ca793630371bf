"""A cryptographically secure random generator for DP noise and Poisson sampling.

Mechanism: the ChaCha20 keystream of ``cryptography`` (OpenSSL), keyed with 32 bytes from
``os.urandom`` (or an explicit key, for tests only), read as little-endian 64-bit words and
turned into float64 uniforms (the top 53 bits), standard normals (Box-Muller, all in vectorised
NumPy), Bernoulli masks and unbiased integers. Guarantee: without the key, the output cannot be
predicted better than chance by anyone who cannot break ChaCha20 -- in particular not by the
server, whatever it knows of the run (seeds, settings, earlier outputs). PCG64, NumPy's default,
is fast but not a cryptographic generator: its state can be recovered from its output.

``SecureRandom`` implements the part of ``numpy.random.Generator`` that fedcare's DP code calls
(``random``, ``standard_normal``, ``normal``, ``integers``) plus ``bernoulli``; pass it wherever
an ``rng`` drives noise or sampling. Simulations keep seeded NumPy generators for reproducible
runs. Nothing here is a home-made cipher: the keystream is ChaCha20 as shipped by
``cryptography``; this module only converts its bytes into numbers.

The keystream is used in segments of ``SEGMENT_BYTES``, each under its own nonce (a 96-bit
segment counter, block counter starting at 0), so no (key, nonce, counter) is ever reused.
Float arithmetic caveat: like every floating-point Gaussian sampler, the low-order bits of a
noised value are not exactly those of an ideal real-valued Gaussian (Mironov, CCS 2012).
"""

import math
import os
import threading
from numbers import Integral, Real
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["KEY_BYTES", "SEGMENT_BYTES", "RandomSource", "SecureRandom", "require_rng"]

KEY_BYTES = 32
SEGMENT_BYTES = 1 << 30  # keystream bytes per nonce (far below ChaCha20's 2**32 blocks)
_TWO_PI = 2.0 * math.pi
_BITS_53 = 2.0**-53
_BITS_24 = 2.0**-24
_PAIRS_PER_BLOCK = 1 << 15  # 256 KiB of float64 per intermediate array
_ZEROS_BYTES = 1 << 20
_ZEROS = memoryview(bytes(_ZEROS_BYTES))  # plaintext of the keystream (read-only)

Size = int | tuple[int, ...] | None


class SecureRandom:
    """Random numbers from a ChaCha20 keystream, keyed from the operating system.

    Parameters
    ----------
    key : bytes, optional
        Exactly 32 bytes. Only for tests and reproductions: anyone holding the key can
        reproduce every draw. Default: 32 fresh bytes from ``os.urandom``, held only in this
        object's cipher state.

    Notes
    -----
    Thread-safe (draws are serialised by a lock). Not picklable on purpose: a copy would
    replay the same noise. Output differs from ``numpy.random.Generator`` for equal "seeds";
    only the distributions match.
    """

    def __init__(self, key: bytes | None = None) -> None:
        if key is None:
            key = os.urandom(KEY_BYTES)
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise ValueError(f"key must be {KEY_BYTES} bytes, got {type(key).__name__} "
                             f"of length {len(key) if hasattr(key, '__len__') else '?'}")
        self._key = bytes(key)
        self._segment = 0
        self._left = SEGMENT_BYTES
        self._encryptor = self._new_encryptor()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        """Name the class only: the key is never shown."""
        return "SecureRandom(<ChaCha20 keystream>)"

    def __reduce__(self) -> Any:
        """Refuse pickling: a copy of the generator would replay its noise."""
        raise TypeError("SecureRandom cannot be pickled: a copy would replay the same noise")

    def _new_encryptor(self) -> Any:
        nonce = (0).to_bytes(4, "little") + self._segment.to_bytes(12, "little")
        return Cipher(algorithms.ChaCha20(self._key, nonce), mode=None).encryptor()

    def _fill(self, out: np.ndarray) -> None:
        """Overwrite the uint8 array ``out`` with the next keystream bytes (ChaCha20 of zeros)."""
        done, total = 0, out.size
        while done < total:
            if self._left == 0:
                self._segment += 1
                self._left = SEGMENT_BYTES
                self._encryptor = self._new_encryptor()
            take = min(total - done, self._left, _ZEROS_BYTES)
            written = self._encryptor.update_into(_ZEROS[:take], out[done : done + take])
            if written != take:  # pragma: no cover - a stream cipher returns what it is given
                raise RuntimeError(f"ChaCha20 returned {written} bytes, not {take}")
            self._left -= take
            done += take

    def _words(self, count: int) -> np.ndarray:
        """Return ``count`` uniform uint64 words (little-endian keystream words)."""
        out = np.empty(8 * count, dtype=np.uint8)
        with self._lock:
            self._fill(out)
        return out.view("<u8").astype(np.uint64, copy=False)

    def random_raw(self, size: Size = None) -> np.ndarray | int:
        """Return uniform 64-bit unsigned integers, like ``BitGenerator.random_raw``."""
        shape = _shape(size)
        words = self._words(_count(shape))
        return int(words[0]) if shape is None else words.reshape(shape)

    def random(self, size: Size = None, dtype: npt.DTypeLike = np.float64) -> Any:
        """Return uniforms on [0, 1): 53 random bits (float64) or 24 (float32) each.

        Every value is a multiple of 2**-53 (2**-24 for float32), each equally likely.
        """
        shape = _shape(size)
        kind = np.dtype(dtype)
        words = self._words(_count(shape))
        values: npt.NDArray[np.float64] | npt.NDArray[np.float32]
        if kind == np.float64:
            values = (words >> np.uint64(11)).astype(np.float64) * _BITS_53
        elif kind == np.float32:
            values = ((words >> np.uint64(40)).astype(np.float32) * np.float32(_BITS_24))
        else:
            raise TypeError(f"dtype must be float64 or float32, got {kind}")
        return values[0] if shape is None else values.reshape(shape)

    def standard_normal(self, size: Size = None, dtype: npt.DTypeLike = np.float64) -> Any:
        """Return i.i.d. N(0, 1) draws (Box-Muller on 53-bit uniforms, computed in float64).

        |z| <= sqrt(-2 ln 2**-53) ~ 8.57 (the largest value a 53-bit uniform allows); float32
        results are the float64 draws rounded once. Work proceeds in cache-sized blocks.
        """
        shape = _shape(size)
        kind = np.dtype(dtype)
        if kind not in (np.float64, np.float32):
            raise TypeError(f"dtype must be float64 or float32, got {kind}")
        count = _count(shape)
        values = np.empty(count + 1, dtype=kind)
        for start in range(0, count, 2 * _PAIRS_PER_BLOCK):
            pairs = min(_PAIRS_PER_BLOCK, (count - start + 1) // 2)
            words = self._words(2 * pairs) >> np.uint64(11)
            # u1 in (0, 1] so that log(u1) is finite; u2 in [0, 1).
            u1 = 1.0 - words[:pairs].astype(np.float64) * _BITS_53
            angle = words[pairs:].astype(np.float64) * (_BITS_53 * _TWO_PI)
            radius = np.sqrt(-2.0 * np.log(u1))
            values[start : start + pairs] = radius * np.cos(angle)
            values[start + pairs : start + 2 * pairs] = radius * np.sin(angle)
        values = values[:count]
        return values[0] if shape is None else values.reshape(shape)

    def normal(self, loc: npt.ArrayLike = 0.0, scale: npt.ArrayLike = 1.0,
               size: Size = None) -> Any:
        """Return N(loc, scale^2) draws; ``loc`` and ``scale`` broadcast like NumPy's."""
        scale_array = np.asarray(scale, dtype=np.float64)
        if np.any(scale_array < 0) or not np.all(np.isfinite(scale_array)):
            raise ValueError(f"scale must be finite and >= 0, got {scale!r}")
        shape: tuple[int, ...] | None
        if size is None:
            shape = np.broadcast_shapes(np.shape(loc), scale_array.shape)
            if shape == ():
                return (float(np.asarray(loc, dtype=np.float64))
                        + float(scale_array) * float(self.standard_normal()))
        else:
            shape = _shape(size)
        return np.asarray(loc, dtype=np.float64) + scale_array * self.standard_normal(shape)

    def bernoulli(self, p: float, size: Size = None) -> Any:
        """Return booleans, each True with probability ``p`` (to 2**-53): a Poisson mask."""
        if isinstance(p, bool) or not isinstance(p, Real) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        return self.random(size) < float(p)

    def integers(
        self,
        low: int,
        high: int | None = None,
        size: Size = None,
        dtype: npt.DTypeLike = np.int64,
        endpoint: bool = False,
    ) -> Any:
        """Return uniform integers in [low, high) ([low, high] with ``endpoint``), unbiased.

        Rejection sampling on 64-bit words masked to the range's bit length, as
        ``numpy.random.Generator.integers`` accepts (scalar bounds only).
        """
        if high is None:
            low, high = 0, low
        for name, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, Integral | np.integer):
                raise TypeError(f"{name} must be an integer, got {value!r}")
        low, high = int(low), int(high) + (1 if endpoint else 0)
        kind = np.dtype(dtype)
        if kind.kind not in "iu":
            raise TypeError(f"dtype must be an integer type, got {kind}")
        info = np.iinfo(kind)
        if low >= high or low < info.min or high - 1 > info.max:
            raise ValueError(f"need {info.min} <= low < high <= {info.max + 1}, got "
                             f"low={low}, high={high}")
        span = high - low  # 1 <= span <= 2**64
        shape = _shape(size)
        count = _count(shape)
        if span == 1 << 64:
            offsets = self._words(count)
        else:
            mask = np.uint64((1 << (span - 1).bit_length()) - 1)
            offsets = np.empty(0, dtype=np.uint64)
            while offsets.size < count:  # accepts each word with probability > 1/2
                candidates = self._words(2 * (count - offsets.size) + 8) & mask
                offsets = np.concatenate([offsets, candidates[candidates < np.uint64(span)]])
            offsets = offsets[:count]
        # low + offset in exact 64-bit two's complement, then viewed as the requested type.
        values = (offsets + np.uint64(low % (1 << 64))).view(np.int64)
        result = values.astype(kind) if kind != np.uint64 else values.view(np.uint64)
        return result[0].item() if shape is None else result.reshape(shape)


RandomSource = np.random.Generator | SecureRandom


def require_rng(rng: object, name: str = "rng") -> RandomSource:
    """Return ``rng`` if it is a ``numpy.random.Generator`` or a ``SecureRandom``.

    Raises
    ------
    TypeError
        Otherwise (the legacy global ``np.random`` state cannot be injected or audited).
    """
    if not isinstance(rng, np.random.Generator | SecureRandom):
        raise TypeError(f"{name} must be a numpy.random.Generator or a SecureRandom, "
                        f"got {type(rng).__name__}")
    return rng


def _shape(size: Size) -> tuple[int, ...] | None:
    if size is None:
        return None
    if isinstance(size, Integral) and not isinstance(size, bool):
        size = (int(size),)
    shape = tuple(int(n) for n in size)  # type: ignore[union-attr]
    if any(n < 0 for n in shape):
        raise ValueError(f"size must be non-negative, got {size!r}")
    return shape


def _count(shape: tuple[int, ...] | None) -> int:
    return 1 if shape is None else math.prod(shape)
