"""What one round produced: the one value the plain and the secure round both return.

The driver (``server.federation``) turns outcomes into metrics.csv rows, checkpoints and the
report; rounds keep no state of their own on the strategy.
"""

from dataclasses import dataclass, field

from common.metrics import Statistics
from common.types import NDArrays
from common.wire.replies import PrivacyReport


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """A round's result.

    Attributes
    ----------
    weights : NDArrays | None
        The new global weights; None when no usable update came (or secure aggregation aborted).
    participants : int
        Hospitals whose updates went into the new weights.
    contributors : int
        Secure rounds: hospitals whose first reply entered the protocol (their ledgers are
        charged for the round, whether or not it completes); 0 in plain rounds.
    declined, rejected : dict
        Hospital (or ``node <id>``) -> reason.
    failed : list of str
        Errors replies carried (a hospital's handler raised).
    missing : int
        Hospitals that sent nothing before the deadline.
    aborted : str
        Why secure aggregation aborted ('' when it did not): nothing of the round is averaged
        in, and it is never re-run (the driver moves on to the next round number).
    privacy : dict
        Each replying hospital's privacy report (epsilon spent, budget).
    evaluation : dict
        Evaluation statistics by hospital, of the model after round ``evaluated_round``.
    evaluated_round : int | None
        Which round's model `evaluation` evaluates (None: no evaluation in this round).
    """

    server_round: int
    weights: NDArrays | None
    participants: int
    contributors: int = 0
    declined: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    missing: int = 0
    aborted: str = ""
    privacy: dict[str, PrivacyReport] = field(default_factory=dict)
    evaluation: dict[str, Statistics] = field(default_factory=dict)
    evaluated_round: int | None = None

    def shortfall(self) -> str:
        """Why hospitals are missing from the round, one reason per hospital or failure."""
        reasons = [f"{name} declined: {why}" for name, why in sorted(self.declined.items())]
        reasons += [f"{name} rejected: {why}" for name, why in sorted(self.rejected.items())]
        reasons += [f"failed: {why}" for why in self.failed]
        if self.missing:
            reasons.append(f"{self.missing} sent nothing before the deadline")
        if self.aborted:
            reasons.append(f"secure aggregation aborted: {self.aborted}")
        return "; ".join(reasons) or "no replies"
