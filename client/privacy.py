"""A hospital's own privacy: its settings, its noise calibration and its update mechanism.

Unit of privacy: one patient's record (patient level, DP-SGD) or one hospital's whole data
(hospital level, DP-FedAvg, McMahan et al. ICLR 2018). The settings come from the hospital's
own node config or, where it sets none, from fedcare's built-in strict defaults (patient level,
epsilon 1, delta 1e-5, RDP, a ledger under ``$FEDCARE_HOME``): never from the run config or a
server message, which the server controls. The server proposes a plan (rounds, steps, batch
size, clip); the hospital calibrates its noise to its own remaining budget and declines any
round its ledger cannot afford, or any run whose DP level differs from its own.
"""

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.dp.accounting import AccountantName, Entry
from common.dp.calibration import calibrate_to_remaining_budget
from common.dp.clipping import clip_to_norm
from common.dp.events import GaussianRoundEvent
from common.dp.noise import add_gaussian_noise, gaussian_stddev
from common.dp.secure_random import SecureRandom
from common.errors import PrivacyBudgetExceededError
from common.types import NDArrays
from common.wire.modes import NoiseMode, PrivacyLevel

if TYPE_CHECKING:
    from common.dp.ledger import PrivacyLedger
    from common.wire.replies import PrivacyReport
    from common.wire.settings import RoundSettings

# Built-in defaults, the strictest sensible: they apply where a hospital's node config is silent.
DEFAULT_MODE = "patient"
DEFAULT_EPSILON = 1.0
DEFAULT_DELTA = 1e-5
DEFAULT_ACCOUNTANT = "rdp"
FEDCARE_HOME = "FEDCARE_HOME"  # the hospital's own directory (default ~/.fedcare)

# Local mode: two possible updates of one hospital, each clipped to C, differ by up to 2C.
HOSPITAL_SENSITIVITY_IN_CLIPS = 2.0


@dataclass(frozen=True, slots=True)
class HospitalPrivacy:
    """What a hospital itself decides about privacy.

    Attributes
    ----------
    mode : {"patient", "hospital", "none"}
        The DP level this hospital applies; it declines rounds of a run that asks another.
    budget_epsilon, budget_delta : float
        The hospital's total budget, across every run on its data: a new ledger's budget; an
        existing ledger keeps its own, which these may only lower.
    budget_stated : tuple[bool, bool]
        Whether the hospital stated (epsilon, delta) itself. An existing ledger is opened with
        the stated ones only: a node config silent on ``budget-epsilon`` keeps the ledger's
        epsilon (made by ``fedcare budget init``), never lowers it to the built-in default.
    accountant : {"rdp", "prv"}
        Opacus accountant for its ledger.
    ledger_path : Path
        Its ledger file, on its own disk.
    ledger_configured : bool
        Whether the hospital named the ledger (node config ``ledger-path``): a configured ledger
        that is missing is a refusal (``fedcare budget init``), never a fresh budget. The
        built-in location is created on first use with the hospital's budget.
    head_path : Path | None
        Where the ledger's hash-chain head is kept (node config ``ledger-head-path``, ideally
        on another volume), so that restoring an older ledger is detected.
    noise_seed : int | None
        Simulation only: seeds the noise for reproducibility. None (deployment): the noise
        comes from the operating system's entropy.
    """

    mode: str
    budget_epsilon: float
    budget_delta: float
    accountant: AccountantName
    ledger_path: Path
    noise_seed: int | None = None
    ledger_configured: bool = False
    head_path: Path | None = None
    colluding: int = 0
    roster_path: Path | None = None
    roster_sha256: str | None = None
    signing_key_path: Path | None = None
    budget_stated: tuple[bool, bool] = (True, True)

    # colluding: c, the most colluding hospitals this hospital assumes (node config
    # ``colluding-hospitals``; the roster's c counts too); distributed noise needs h <= t - c.
    # roster_path, roster_sha256, signing_key_path: secure aggregation's pinned consortium
    # roster and this hospital's signing key (``client.secure_aggregation`` loads them).

    @property
    def ledger_limits(self) -> tuple[float | None, float | None]:
        """The (epsilon, delta) an existing ledger is opened with: None keeps the ledger's own.

        Only a budget the hospital stated may lower its ledger's (a lowering is recorded in its
        disclosure log).
        """
        stated_epsilon, stated_delta = self.budget_stated
        return (self.budget_epsilon if stated_epsilon else None,
                self.budget_delta if stated_delta else None)

    @property
    def trusted_peers(self) -> bool:
        """Whether the hospital pinned a consortium roster (the peers of a secure round are
        then the roster's hospitals, never peers of the server's making).
        """
        return self.roster_path is not None and self.roster_sha256 is not None

    def noise_rng(self, *, server_round: int, hospital_index: int,
                  stream: int = 0) -> np.random.Generator:
        """The generator for this round's noise and Poisson sampling (stream 0), rounding (1)
        or evaluation release (2).
        """
        if self.noise_seed is None:
            return SecureRandom()  # type: ignore[return-value]  # ChaCha20 keyed from os.urandom
        return np.random.default_rng([self.noise_seed, server_round, hospital_index, 0xD9, stream])


def dp_sgd_steps(*, rows: int, batch_size: int, local_steps: int, local_epochs: int) -> int:
    """Local DP-SGD steps per round: `local_steps`, or epochs of ceil(rows / batch) steps."""
    return local_steps if local_steps > 0 else local_epochs * math.ceil(rows / batch_size)


@lru_cache(maxsize=64)
def _calibrate(prior: tuple[Entry, ...], budget: float, delta: float, sample_rate: float,
               steps: int, accountant: AccountantName) -> float:
    return calibrate_to_remaining_budget(prior, budget_epsilon=budget, delta=delta,
                                         sample_rate=sample_rate, steps=steps,
                                         accountant=accountant)


def plan_round_event(
    priors: list[list[Entry]],
    *,
    level: PrivacyLevel,
    budget_epsilon: float,
    budget_delta: float,
    accountant: AccountantName,
    planned_rounds: int,
    sample_rate: float,
    steps_per_round: int,
) -> GaussianRoundEvent:
    """Return the event of one round, with z calibrated so the planned run fits the budget.

    `priors` holds the histories from earlier runs that the run must fit: the patient-level one
    (which composes every entry on the ledger) and, for a hospital-level run, the
    hospital-level one; z is the largest that any of them needs, so it stays fixed within a
    run (and is computed once per process). A hospital-level release counts at patient level
    with the same z and sample rate 1, so `sample_rate` is the level's own for both. Raises
    PrivacyBudgetExceededError when nothing fits.
    """
    z = max(_calibrate(tuple(prior), budget_epsilon, budget_delta, sample_rate,
                       planned_rounds * steps_per_round, accountant) for prior in priors)
    return GaussianRoundEvent(noise_multiplier=z, sample_rate=sample_rate,
                              steps=steps_per_round, level=level,
                              noise_mode=NoiseMode.LOCAL if level == PrivacyLevel.HOSPITAL
                              else None)


def distributed_round_event(request: "RoundSettings", privacy: HospitalPrivacy,
                            priors: list[list[Entry]], budget_epsilon: float,
                            budget_delta: float) -> GaussianRoundEvent:
    """The event of a distributed-noise round: the run's z, if this hospital accepts the run.

    Every hospital adds the same share (the run's z and h), so the honest shares add up to the
    accounted noise. The hospital refuses (PrivacyBudgetExceededError with the reason) without
    a trusted peer set (deployment needs a pinned roster: not yet supported), when h is not
    within the threshold t it verified less the colluders c it assumes (h <= t - c), or when its
    own budget cannot afford z over the planned rounds at both levels.
    """
    from common.dp.accounting import epsilon_from_history

    if not privacy.trusted_peers:
        raise PrivacyBudgetExceededError(
            "distributed noise needs a pinned consortium roster, so that the server cannot add "
            "peers of its own to the sum; this hospital has none: use dp.noise-mode 'local'")
    from client.secure_aggregation import pinned_roster
    from common.secagg.roster import colluders_problem

    roster = pinned_roster(privacy)
    t, h, z = request.secagg_threshold, request.honest_contributors, request.noise_multiplier
    c = max(privacy.colluding, roster.colluders)
    if not 1 <= h <= t - c:
        raise PrivacyBudgetExceededError(
            f"the run assumes {h} honest contributors, but with threshold t={t} and up to "
            f"c={c} colluding hospitals (this hospital's assumption) only t - c = {t - c} are "
            "guaranteed")
    if (refusal := colluders_problem(roster, minimum=privacy.colluding)) is not None:
        raise PrivacyBudgetExceededError(refusal)  # a roster with c below its own minimum
    if not z > 0:
        raise PrivacyBudgetExceededError("the run states no noise multiplier for distributed noise")
    planned = (z, 1.0, request.planned_rounds)
    spent = max(epsilon_from_history([*prior, planned], delta=budget_delta,
                                     accountant=privacy.accountant) for prior in priors)
    if spent > budget_epsilon:
        raise PrivacyBudgetExceededError(
            f"the run's noise multiplier {z:.4g} over {request.planned_rounds} rounds would "
            f"spend epsilon {spent:.4g} > this hospital's budget {budget_epsilon:.4g}")
    return GaussianRoundEvent(noise_multiplier=z, sample_rate=1.0, steps=1,
                              level=PrivacyLevel.HOSPITAL, noise_mode=NoiseMode.DISTRIBUTED)


def hospital_noise_stddev(
    event: GaussianRoundEvent, *, clipping_norm: float, noise_mode: NoiseMode,
    honest_contributors: int = 1, rounding_bound: float = 0.0,
) -> float:
    """Per-coordinate noise stddev one hospital adds so that the accounted z holds.

    Both modes account one adjacency: replacing one hospital's data, sensitivity 2C.
    - ``local``: the update alone is private, so stddev = 2 z C.
    - ``distributed`` (under secure aggregation): only the sum is released; its sensitivity is
      2 (C + r), r the worst-case L2 error of stochastic rounding (``rounding_bound``). Every
      hospital adds 2 z (C + r) / sqrt(h), h the run's honest-contributor count, so any round
      with at least h honest contributors carries at least 2 z (C + r). More contributors only
      add noise: the ledger's z is a bound on the spend, never an under-count.
    """
    if noise_mode == NoiseMode.LOCAL:
        return gaussian_stddev(noise_multiplier=event.noise_multiplier,
                               clipping_norm=HOSPITAL_SENSITIVITY_IN_CLIPS * clipping_norm)
    if noise_mode == NoiseMode.DISTRIBUTED:
        return gaussian_stddev(noise_multiplier=event.noise_multiplier,
                               clipping_norm=HOSPITAL_SENSITIVITY_IN_CLIPS
                               * (clipping_norm + rounding_bound),
                               num_contributors=honest_contributors)
    raise ValueError(f"noise_mode must be 'local' or 'distributed', got {noise_mode!r}")


def privatize_update(
    update: NDArrays, *, clipping_norm: float, stddev: float, rng: np.random.Generator
) -> NDArrays:
    """Clip a hospital-level update to L2 norm C, then add N(0, stddev^2) per coordinate."""
    clipped, _ = clip_to_norm(update, clipping_norm=clipping_norm)
    return add_gaussian_noise(clipped, stddev=stddev, rng=rng)


def ledger_report(privacy: HospitalPrivacy, hospital: str) -> "PrivacyReport | None":
    """What the hospital's ledger stands at, as its replies state it (None without DP or a
    usable ledger).

    Every figure is Opacus on the ledger's recorded history: the training track's and the test
    track's patient-level epsilon, the hospital level over both, and a patient's epsilon over
    both tracks (``PrivacyLedger.patient_guarantee``).
    """
    from common.dp.ledger import PrivacyLedger
    from common.errors import LedgerError
    from common.wire.modes import LedgerTrack, PrivacyLevel
    from common.wire.replies import PrivacyReport

    if privacy.mode == "none" or not privacy.ledger_path.is_file():
        return None
    fallback = default_head_path(hospital) if privacy.ledger_configured else None
    try:  # read-only: stating the figures writes nothing
        ledger = PrivacyLedger.read(privacy.ledger_path, head_path=privacy.head_path,
                                    default_head_path=fallback)
        total, _, how = ledger.patient_guarantee()
    except LedgerError:
        return None
    return PrivacyReport(
        epsilon_patient=ledger.epsilon_spent(PrivacyLevel.PATIENT),
        epsilon_hospital=ledger.epsilon_spent(PrivacyLevel.HOSPITAL),
        budget_epsilon=ledger.budget_epsilon, budget_delta=ledger.budget_delta,
        epsilon_test=ledger.epsilon_spent(PrivacyLevel.PATIENT, LedgerTrack.TEST),
        test_budget_epsilon=ledger.test_budget_epsilon,
        test_budget_delta=ledger.test_budget_delta, epsilon_total=total,
        parallel=how == "parallel")


def split_refusal(ledger: "PrivacyLedger", split_digest: str) -> str:
    """Why to decline a release made under this split ('' when the ledger accepts it).

    Read-only: the first charge that names a split pins it in the ledger
    (``PrivacyLedger.charge(..., split=...)``); a run whose rows are split otherwise is
    declined, since a patient could then be on both sides.
    """
    if not split_digest:
        return ("this hospital's data states no split digest, so its ledger cannot pin which "
                "rows are test rows; nothing is released")
    return ledger.split_problem(split_digest)


def planned_releases(request: "RoundSettings", level: str) -> int:
    """The Gaussian releases a run plans at ``level``'s track for its updates' calibration.

    Patient level: the planned rounds (evaluations go on the test track, with its own budget).
    Hospital level: the rounds plus the run's evaluations, every one at the same noise
    multiplier (a hospital's whole data set is one unit: evaluations compose with training).
    """
    from common.config import planned_evaluations

    if level == "hospital":
        return request.planned_rounds + planned_evaluations(request.planned_rounds,
                                                            request.eval_every)
    return request.planned_rounds


def fedcare_home() -> Path:
    """The hospital's own fedcare directory: ``$FEDCARE_HOME``, or ``~/.fedcare``."""
    return Path(os.environ.get(FEDCARE_HOME) or "~/.fedcare").expanduser()


def default_ledger_path(hospital: str) -> Path:
    """The built-in ledger location for `hospital`: no server value can move it."""
    return fedcare_home() / "ledgers" / f"{hospital}.json"


def default_head_path(hospital: str) -> Path:
    """The built-in head file of `hospital`'s ledger: ``$FEDCARE_HOME/heads/<hospital>.head``.

    A directory apart from ``ledgers/``, so that deleting or restoring the ledger directory
    leaves the head that exposes it (``common.dp.ledger.PrivacyLedger``).
    """
    return fedcare_home() / "heads" / f"{hospital}.head"


def privacy_from_node_config(node_config: dict[str, Any], hospital: str) -> HospitalPrivacy:
    """Return a hospital's privacy settings: its node config, else the built-in defaults.

    Node config keys (validated by ``client.node_config.NodeConfig``): ``dp-mode``,
    ``budget-epsilon``, ``budget-delta``, ``accountant``, ``ledger-path``,
    ``ledger-head-path``. Nothing here is read from the run config. Noise always comes from
    the operating system's entropy.

    Every ledger is ``ledger_configured``: it must exist (``fedcare budget init``), except
    the built-in one of a hospital simulated by Flower's simulation engine (``flwr run .``;
    ``client.simulation_engine``), which the researcher owns: it is made on first use, its
    head at ``default_head_path``.

    Raises
    ------
    ValueError
        If the node config is invalid (naming the key).
    """
    from client.node_config import NodeConfig
    from client.simulation_engine import in_flower_simulation

    node = NodeConfig.from_node_config(node_config)
    simulated = node.ledger_path is None and in_flower_simulation()
    return HospitalPrivacy(
        mode=node.dp_mode or DEFAULT_MODE,
        budget_epsilon=node.budget_epsilon or DEFAULT_EPSILON,
        budget_delta=node.budget_delta or DEFAULT_DELTA,
        accountant=node.accountant or DEFAULT_ACCOUNTANT,  # type: ignore[arg-type]
        ledger_path=node.ledger_path or default_ledger_path(hospital),
        ledger_configured=not simulated,
        head_path=node.ledger_head_path or (default_head_path(hospital) if simulated else None),
        colluding=node.colluding_hospitals or 0,
        roster_path=node.roster_path,
        roster_sha256=node.roster_sha256,
        signing_key_path=node.signing_key_path,
        budget_stated=(node.budget_epsilon is not None, node.budget_delta is not None),
    )


def open_ledger(privacy: HospitalPrivacy, hospital: str) -> tuple["PrivacyLedger | None", str]:
    """Open the hospital's ledger: (ledger, '') or (None, why the hospital must refuse).

    A configured ledger (every real hospital's, ``privacy_from_node_config``) is never
    created here: missing, it is a refusal naming ``fedcare budget init`` when its head file
    is missing too, else saying that it was deleted. Its head file is the node config's
    ``ledger-head-path``, else the one the ledger records, else ``default_head_path``. Only a
    ledger its owner made the provider leave unconfigured (a simulated hospital) is made on
    first use, with the hospital's budget and ``head_path``, by default in a directory beside
    the ledger's (``run/ledgers/x.json``: ``run/ledgers-heads/x.head``), so that deleting or
    restoring the ledger directory is refused there too.

    Raises
    ------
    LedgerError
        If the ledger is unreadable, tampered with, or older than its head (restored copy).
    """
    from common.dp.ledger import PrivacyLedger
    from common.errors import LedgerError

    path = privacy.ledger_path
    if not path.exists() and not privacy.ledger_configured:
        head = privacy.head_path or (path.parent.with_name(f"{path.parent.name}-heads")
                                     / f"{path.stem}.head")
        try:
            return PrivacyLedger.create(path, hospital=hospital,
                                        budget_epsilon=privacy.budget_epsilon,
                                        budget_delta=privacy.budget_delta,
                                        accountant=privacy.accountant, head_path=head), ""
        except LedgerError:
            if not path.exists():  # refused for a reason other than a concurrent creation
                raise
    fallback = default_head_path(hospital) if privacy.ledger_configured else None
    epsilon, delta = privacy.ledger_limits
    try:
        return PrivacyLedger.open(path, hospital=hospital, budget_epsilon=epsilon,
                                  budget_delta=delta,
                                  accountant=privacy.accountant, head_path=privacy.head_path,
                                  default_head_path=fallback), ""
    except LedgerError as error:
        if path.exists():
            raise
        return None, str(error)  # missing: the refusal says why, and what the hospital can do
