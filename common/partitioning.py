"""Split a centralised data set into hospitals: IID or Dirichlet(alpha) label skew, seeded.

Every row goes to exactly one hospital; the same seed gives the same split. How many rows a
hospital needs follows from its own train/test split (``min_rows_for_split``), and so does how
many hospitals a data set can feed (``max_parts``).
"""

import math

import numpy as np


class PartitionError(ValueError):
    """No Dirichlet draw gave every part its minimum of rows.

    Attributes
    ----------
    short_parts : dict[int, int]
        In the draw with the fewest short parts: each short part's index and its row count.
    """

    def __init__(self, message: str, short_parts: dict[int, int]) -> None:
        super().__init__(message)
        self.short_parts = short_parts


def min_rows_for_split(min_train: int, min_test: int, test_fraction: float) -> int:
    """Smallest row count whose train/test split keeps `min_train` and `min_test` rows.

    The split is scikit-learn's ``train_test_split(test_size=test_fraction)``: the test part
    has ``ceil(test_fraction * rows)`` rows and the training part the rest.
    """
    if min_train < 1 or min_test < 1 or not 0 < test_fraction < 1:
        raise ValueError("min_train and min_test must be >= 1 and test_fraction in (0, 1), got "
                         f"{min_train!r}, {min_test!r}, {test_fraction!r}")
    rows = min_train + min_test
    while not (math.ceil(test_fraction * rows) >= min_test
               and rows - math.ceil(test_fraction * rows) >= min_train):
        rows += 1
    return rows


def max_parts(num_rows: int, min_rows_per_part: int) -> int:
    """The most near-equal parts (an IID split) of `num_rows` rows that keep the minimum each."""
    return num_rows // min_rows_per_part


def iid_partition(
    num_rows: int, num_parts: int, *, rng: np.random.Generator, min_rows_per_part: int = 1
) -> list[np.ndarray]:
    """Shuffle row indices and cut them into `num_parts` near-equal, disjoint parts.

    Raises
    ------
    ValueError
        If a part would get fewer than `min_rows_per_part` rows.
    """
    _check_parts(num_rows, num_parts, min_rows_per_part)
    return [np.sort(part) for part in np.array_split(rng.permutation(num_rows), num_parts)]


def dirichlet_partition(
    labels: np.ndarray,
    num_parts: int,
    *,
    alpha: float,
    rng: np.random.Generator,
    min_rows_per_part: int = 10,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Give each hospital a Dirichlet(alpha) share of every label class (Hsu et al. 2019).

    Smaller alpha means stronger label skew. Draws are repeated (up to `max_tries`) until
    every part holds at least `min_rows_per_part` rows.

    Parameters
    ----------
    labels : np.ndarray
        Integer class per row, shape (rows,). Regression targets must be binned first.

    Raises
    ------
    PartitionError
        If no draw kept every part at the minimum; ``short_parts`` names the short parts of
        the draw that came closest.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    _check_parts(len(labels), num_parts, min_rows_per_part)
    closest: dict[int, int] | None = None
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_parts)]
        for label in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(num_parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
            for part, chunk in zip(parts, np.split(rows, cuts), strict=True):
                part.extend(chunk.tolist())
        short = {i: len(p) for i, p in enumerate(parts) if len(p) < min_rows_per_part}
        if not short:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
        if closest is None or len(short) < len(closest):
            closest = short
    raise PartitionError(
        f"could not split {len(labels)} rows into {num_parts} hospitals of at least "
        f"{min_rows_per_part} rows with alpha={alpha} in {max_tries} tries; "
        "use fewer hospitals or a larger alpha",
        short_parts=closest or {},
    )


def _check_parts(num_rows: int, num_parts: int, min_rows_per_part: int) -> None:
    if num_parts < 1:
        raise ValueError(f"number of hospitals must be >= 1, got {num_parts}")
    if num_rows < num_parts * min_rows_per_part:
        raise ValueError(
            f"{num_rows} rows cannot give {num_parts} hospitals {min_rows_per_part} rows each"
        )
