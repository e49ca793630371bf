"""What a hospital may send back, per reply kind, and the per-mode manifest of optional parts.

Unit of privacy and what leaves: a reply carries the hospital's identity (with a signature
proving it, when the hospital holds a roster key), which request it answers (run id and round:
a replayed reply from another round is refused), and only the parts the run's mode allows
(``MANIFEST``). The manifest is the declared list of everything that may
leave a hospital; ``check_manifest`` enforces it where a reply is built and where it is read.

Decisions for the borderline parts (the report's privacy statement lists the uncovered ones):
- ``update``: the clipped (DP: noised) update, in the clear only outside secure aggregation.
- ``privacy``: epsilon spent per level and track and the hospital's own budgets. Not covered:
  the epsilon depends on the hospital's row count through the sample rate q = batch / rows.
- ``num_examples``, ``train_loss``, ``encoding_clipped``: raw data-dependent numbers, only in
  runs without DP (hospital level never sends a training loss; patient level computes none).
- ``statistics``: the evaluation of a model on the test rows. Under DP a Gaussian release
  (noised counts and a 4-bin score histogram per label, charged on the ledger's test track);
  without DP exact sums.
- ``secagg``: a protocol stage's payload (keys, encrypted shares, the masked input).
- decline reasons: text; not covered (they tell that a hospital declined and why, e.g. budget).
- the noise level is never sent: the server derives every bound from the run's settings.
"""

import math
from dataclasses import dataclass, field, fields
from enum import StrEnum

import numpy as np

from common.wire.modes import DpMode, NoiseMode

NDArrays = list[np.ndarray]
SecAggPayload = dict[str, object]


class ReplyKind(StrEnum):
    """Which reply a record holds."""

    TRAIN = "train"
    DECLINED = "declined"
    EVALUATE = "evaluate"
    SECAGG = "secagg"
    EXPLAIN = "explain"


@dataclass(frozen=True, slots=True)
class HospitalIdentity:
    """Who a hospital says it is: its name (ledger, roster, SuperNode) and its index.

    ``proof`` (optional, 64 bytes): the hospital's Ed25519 signature, with its roster key, over
    the run, the round, its name and the node id its reply leaves from
    (``common.identity_proof``); how a simulated node proves which hospital it is. It is not
    part of the identity: two identities with the same name and index are equal.
    """

    name: str
    index: int
    proof: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RoundRef:
    """The request a reply answers: the run and the round."""

    run_id: str
    server_round: int


@dataclass(frozen=True, slots=True)
class PrivacyReport:
    """Epsilon spent so far per level and track (+inf: unbounded) and the hospital's budgets.

    ``epsilon_patient`` is the training track's, ``epsilon_test`` the test track's (patient
    level), ``epsilon_hospital`` composes both; ``epsilon_total`` is a patient's epsilon over
    both tracks: the larger of the two when ``parallel`` (split pinned before any release),
    else their sequential composition. Every figure is Opacus on the hospital's ledger.
    """

    epsilon_patient: float
    epsilon_hospital: float
    budget_epsilon: float
    budget_delta: float
    epsilon_test: float = 0.0
    test_budget_epsilon: float = math.inf
    test_budget_delta: float = 0.0
    epsilon_total: float = 0.0
    parallel: bool = False


@dataclass(frozen=True, slots=True)
class TrainReply:
    """A hospital's update for the round (absent under secure aggregation: it leaves masked)."""

    hospital: HospitalIdentity
    answers: RoundRef
    update: NDArrays | None = None
    privacy: PrivacyReport | None = None
    num_examples: int | None = None
    train_loss: float | None = None
    encoding_clipped: int | None = None
    statistics: dict[str, np.ndarray] | None = None
    secagg: SecAggPayload | None = None


@dataclass(frozen=True, slots=True)
class DeclinedReply:
    """A hospital that does not take part this round, and why."""

    hospital: HospitalIdentity
    answers: RoundRef
    reason: str
    privacy: PrivacyReport | None = None
    statistics: dict[str, np.ndarray] | None = None


@dataclass(frozen=True, slots=True)
class EvaluateReply:
    """A hospital's evaluation of the weights it received (under DP: the release and what its
    ledger stands at after charging it).
    """

    hospital: HospitalIdentity
    answers: RoundRef
    statistics: dict[str, np.ndarray]
    privacy: PrivacyReport | None = None


@dataclass(frozen=True, slots=True)
class SecAggStageReply:
    """A later secure-aggregation stage's payload (and the next round's keys on unmask)."""

    hospital: HospitalIdentity
    answers: RoundRef
    secagg: SecAggPayload
    secagg_next: SecAggPayload | None = None


@dataclass(frozen=True, slots=True)
class ExplainReply:
    """A hospital's consortium-explanation release (``common.explain.consortium``): the noisy
    sum of its rows' clipped absolute attributions and the weighted noisy count, d + 1 cells,
    and what its ledger stands at after charging it (training track, patient level).
    """

    hospital: HospitalIdentity
    answers: RoundRef
    attributions: np.ndarray
    privacy: PrivacyReport | None = None


Reply = TrainReply | DeclinedReply | EvaluateReply | SecAggStageReply | ExplainReply

# The optional parts of a train reply each mode allows: (dp mode, noise mode, secure) -> parts.
_ALWAYS = frozenset({"statistics"})
_PLAIN_PRIVATE = _ALWAYS | {"update", "privacy"}
_SECURE_PRIVATE = _ALWAYS | {"secagg", "privacy"}
_EXPLAIN = frozenset({"attributions"})  # patient level: the explanation's own reply (once)
MANIFEST: dict[tuple[DpMode, NoiseMode, bool], frozenset[str]] = {
    (DpMode.NONE, NoiseMode.LOCAL, False): _ALWAYS | {"update", "num_examples", "train_loss"},
    (DpMode.NONE, NoiseMode.LOCAL, True): _ALWAYS | {"secagg", "num_examples", "train_loss",
                                                      "encoding_clipped"},
    (DpMode.PATIENT, NoiseMode.LOCAL, False): _PLAIN_PRIVATE | _EXPLAIN,
    (DpMode.PATIENT, NoiseMode.LOCAL, True): _SECURE_PRIVATE | _EXPLAIN,
    (DpMode.HOSPITAL, NoiseMode.LOCAL, False): _PLAIN_PRIVATE,
    (DpMode.HOSPITAL, NoiseMode.LOCAL, True): _SECURE_PRIVATE,
    (DpMode.HOSPITAL, NoiseMode.DISTRIBUTED, True): _SECURE_PRIVATE,
}
_OPTIONAL = ("update", "privacy", "num_examples", "train_loss", "encoding_clipped",
             "statistics", "secagg")


class ManifestViolation(ValueError):
    """A reply would carry a part its mode does not allow (or misses one it needs)."""


def allowed_parts(dp_mode: DpMode, noise_mode: NoiseMode, secure: bool) -> frozenset[str]:
    """The optional parts a train reply of this mode may carry (empty: no such mode)."""
    noise = noise_mode if dp_mode == DpMode.HOSPITAL else NoiseMode.LOCAL
    return MANIFEST.get((dp_mode, noise, secure), frozenset())


def present_parts(reply: TrainReply | DeclinedReply) -> frozenset[str]:
    """The optional parts a reply carries."""
    names = {f.name for f in fields(reply)}
    return frozenset(p for p in _OPTIONAL if p in names and getattr(reply, p) is not None)


def check_manifest(reply: TrainReply | DeclinedReply, dp_mode: DpMode, noise_mode: NoiseMode,
                   secure: bool) -> None:
    """Raise ManifestViolation if `reply` carries a part its mode does not allow.

    A train reply must also carry what the mode needs: its update (or, secure, the first stage's
    payload) and, under DP, its privacy report.
    """
    allowed = allowed_parts(dp_mode, noise_mode, secure)
    if not allowed and isinstance(reply, DeclinedReply):
        # Declining a run of a mode no reply exists for: the reason, nothing data-dependent.
        allowed = frozenset({"privacy"} if dp_mode != DpMode.NONE else set())
    if not allowed:
        raise ManifestViolation(f"no reply is allowed for dp mode {dp_mode.value!r} with noise "
                                f"{noise_mode.value!r} {'with' if secure else 'without'} "
                                "secure aggregation")
    extra = sorted(present_parts(reply) - allowed)
    if extra:
        raise ManifestViolation(f"{extra} may not leave a hospital in dp mode {dp_mode.value!r}"
                                f"{' under secure aggregation' if secure else ''}")
    if isinstance(reply, TrainReply):
        needed = {"secagg" if secure else "update"} | ({"privacy"} if dp_mode != DpMode.NONE
                                                       else set())
        missing = sorted(needed - present_parts(reply))
        if missing:
            raise ManifestViolation(f"a train reply in dp mode {dp_mode.value!r} needs {missing}")
