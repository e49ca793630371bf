"""Mask generator: the ChaCha20 keystream of a 32-byte key, read as uint64 words mod 2**64.

The keystream (ChaCha20 encrypting zeros, via `cryptography`) is a PRG: without the key, a
mask is computationally indistinguishable from uniform on Z_(2**64)^d, so a masked update
reveals nothing to the server. Every key masks one vector only (keys are derived per round,
purpose and pair), so the fixed all-zero nonce is never reused with a key.
Bonawitz et al. (CCS 2017), Section 3 (PRG); RFC 8439.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

MASK_KEY_BYTES = 32
# cryptography's ChaCha20 takes a 16-byte nonce: a 4-byte little-endian block counter, then
# the 12-byte nonce; both start at zero.
_NONCE = bytes(16)
# The 32-bit block counter covers 2**32 blocks of 64 bytes, i.e. 2**35 uint64 words.
MAX_MASK_LENGTH = 2**35


def expand_mask(key: bytes, length: int) -> npt.NDArray[np.uint64]:
    """Expand a 32-byte key into ``length`` pseudorandom uint64 words (one keystream call).

    Parameters
    ----------
    key
        32 uniformly random bytes (an HKDF output or a fresh seed).
    length
        Number of words d.

    Returns
    -------
    numpy.ndarray
        uint64, shape (d,), a new writable array. Deterministic in ``key``.

    Raises
    ------
    ValueError
        If the key is not 32 bytes or ``length`` is negative or too large.
    """
    if not isinstance(key, bytes) or len(key) != MASK_KEY_BYTES:
        raise ValueError(f"a mask key is {MASK_KEY_BYTES} bytes")
    if isinstance(length, bool) or not isinstance(length, int):
        raise ValueError(f"length must be an int, got {length!r}")
    if not 0 <= length <= MAX_MASK_LENGTH:
        raise ValueError(f"length must be an int in [0, 2**35], got {length!r}")
    words = np.empty(length, dtype="<u8")
    encryptor = Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor()
    encryptor.update_into(bytes(words.nbytes), words.view(np.uint8).data)
    return words.astype(np.uint64, copy=False)
