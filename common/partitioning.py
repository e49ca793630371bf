"""Split a centralised data set into hospitals: IID or Dirichlet(alpha) label skew, seeded.

Every row goes to exactly one hospital; the same seed gives the same split.
"""

import numpy as np


def iid_partition(num_rows: int, num_parts: int, *, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle row indices and cut them into `num_parts` near-equal, disjoint parts."""
    _check_parts(num_rows, num_parts, min_rows_per_part=1)
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
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    _check_parts(len(labels), num_parts, min_rows_per_part)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_parts)]
        for label in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(num_parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
            for part, chunk in zip(parts, np.split(rows, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_rows_per_part:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"could not split {len(labels)} rows into {num_parts} hospitals of at least "
        f"{min_rows_per_part} rows with alpha={alpha} in {max_tries} tries; "
        "use fewer hospitals or a larger alpha"
    )


def _check_parts(num_rows: int, num_parts: int, min_rows_per_part: int) -> None:
    if num_parts < 1:
        raise ValueError(f"number of hospitals must be >= 1, got {num_parts}")
    if num_rows < num_parts * min_rows_per_part:
        raise ValueError(
            f"{num_rows} rows cannot give {num_parts} hospitals {min_rows_per_part} rows each"
        )
