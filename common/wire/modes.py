"""The modes a run and a hospital agree on, as enums (their values are the run-config texts).

``StrEnum`` members compare equal to their text, so ``DpMode.PATIENT == "patient"``; the wire
and the run config carry the text, and every reader turns it into the enum or refuses it.
"""

from enum import StrEnum


class DpMode(StrEnum):
    """The unit of privacy: one patient's record, one hospital's data, or none."""

    PATIENT = "patient"
    HOSPITAL = "hospital"
    NONE = "none"


class PrivacyLevel(StrEnum):
    """The unit of privacy a release protects: one patient's record or one hospital's data."""

    PATIENT = "patient"
    HOSPITAL = "hospital"


class NoiseMode(StrEnum):
    """Hospital level: each update fully noised (local) or a share of the sum's noise."""

    LOCAL = "local"
    DISTRIBUTED = "distributed"


class Partition(StrEnum):
    """How a split task deals its rows to hospitals."""

    IID = "iid"
    DIRICHLET = "dirichlet"


class Weighting(StrEnum):
    """Each hospital's weight in the mean: equal, or its training rows (non-DP runs only)."""

    UNIFORM = "uniform"
    EXAMPLES = "examples"


class Aggregator(StrEnum):
    """The server's combination of updates."""

    MEAN = "mean"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed-mean"


class ServerOptimizerName(StrEnum):
    """The optimizer the server applies to the mean update."""

    FEDAVG = "fedavg"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"


class AccountantName(StrEnum):
    """Opacus's accountants."""

    RDP = "rdp"
    PRV = "prv"


class LedgerTrack(StrEnum):
    """The rows a ledger entry's release is computed from: training rows or test rows.

    With the split pinned (every patient on one side for the ledger's whole life) the two
    tracks compose in parallel: a patient's epsilon is the larger of the two.
    """

    TRAIN = "train"
    TEST = "test"


class Normalisation(StrEnum):
    """How features are scaled before training and evaluation.

    ``public``: constants every hospital holds (the task's or schema's declared ranges or
    reference values; no epsilon). ``per-hospital``: each hospital z-scores with its own
    training mean and std (outside the unit of privacy: listed as not covered).
    """

    PUBLIC = "public"
    PER_HOSPITAL = "per-hospital"
