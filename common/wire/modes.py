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
