"""Which of a hospital's rows are test rows, as one digest its ledger pins.

Training and test rows compose in parallel on the ledger only if every patient stays on the
same side for the ledger's whole life. The digest identifies the split, not the values: it is
computed from the raw rows (before any normalisation, so changing the normalisation setting
keeps the split) as the SHA-256 of the sorted per-row digests of the test rows, then of the
training rows. The same rows on the same sides give the same digest in any order; moving one
row across changes it. Nothing of it leaves the hospital.
"""

import hashlib

import numpy as np


def _row_digests(x: np.ndarray, y: np.ndarray) -> list[bytes]:
    rows = np.concatenate([np.asarray(x, dtype=np.float64).reshape(len(y), -1),
                           np.asarray(y, dtype=np.float64).reshape(-1, 1)], axis=1)
    return sorted(hashlib.sha256(np.ascontiguousarray(row).tobytes()).digest() for row in rows)


def split_digest(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                 y_test: np.ndarray) -> str:
    """SHA-256 (hex) of the split: the raw test rows' digests, then the training rows'."""
    digest = hashlib.sha256(b"fedcare-split/1|test")
    for row in _row_digests(x_test, y_test):
        digest.update(row)
    digest.update(b"|train")
    for row in _row_digests(x_train, y_train):
        digest.update(row)
    return digest.hexdigest()


def identifier_digest(test_ids: list[str], train_ids: list[str]) -> str:
    """SHA-256 (hex) of a split given by stable patient identifiers (task csv)."""
    digest = hashlib.sha256(b"fedcare-split/1|ids|test")
    for value in sorted(test_ids):
        digest.update(hashlib.sha256(value.encode()).digest())
    digest.update(b"|train")
    for value in sorted(train_ids):
        digest.update(hashlib.sha256(value.encode()).digest())
    return digest.hexdigest()
