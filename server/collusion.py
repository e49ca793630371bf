"""What a secure run assumes about collusion, as numbers, and what a curious participant faces.

Secure aggregation with threshold t releases only sums of at least t contributions; the
consortium roster states c, the most hospitals assumed to collude with the server or to be
curious. Distributed noise divides each hospital's share by sqrt(h), h = t - c honest
contributors (or the h the roster or run states, never more than t - c): any c participants
can subtract their own contributions from a round's sum and still face h honest shares, i.e.
the full accounted noise multiplier z. With c = 0 (h = t) nothing is left for a participant
that subtracts its own share: it sees the victim's update under h - 1 honest shares, noise
multiplier z * sqrt((h - 1) / h), and that epsilon, not the ledger's, holds against it.

The epsilons here are the project's Opacus accounting (``common.dp.accounting``) on a history
of (noise multiplier, sample rate, steps) entries: the ledger's entries with each z replaced.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from common.config import RunConfig
from common.dp.accounting import AccountantName, Entry, epsilon_from_history
from common.secagg.roster import Roster
from common.wire.modes import NoiseMode


@dataclass(frozen=True, slots=True)
class SecureTrust:
    """The numbers a secure run's guarantee rests on (what the report's statement prints).

    Attributes
    ----------
    threshold : int
        t, the fewest contributions any round's sum holds (the run's secure-aggregation
        threshold).
    colluders : int
        c, the most hospitals assumed to collude with the server or be curious (the pinned
        roster's; every hospital refuses a roster whose c is below its own minimum).
    honest : int
        h, the honest contributions distributed noise counts on (each hospital adds 1/sqrt(h)
        of the noise); 0 when the run adds no distributed noise.
    noise_multiplier : float
        z, distributed noise's multiplier on the sum's sensitivity 2(C + r); 0 otherwise.
    """

    threshold: int
    colluders: int
    honest: int = 0
    noise_multiplier: float = 0.0

    @property
    def distributed(self) -> bool:
        """Whether the run added distributed noise (h and z are then set)."""
        return self.honest > 0 and self.noise_multiplier > 0


def with_roster_honest(config: RunConfig, roster: Roster | None) -> RunConfig:
    """The run with distributed noise's h taken from the pinned roster when it states none.

    h is the roster's h if it states one, else t - c (t the run's threshold, c the roster's),
    never below 1: the count every hospital checks (h <= t - c) and divides its share by. A
    run that sets ``secagg.honest-contributors`` keeps it (each hospital still checks it).
    """
    if (roster is None or config.dp_noise_mode != NoiseMode.DISTRIBUTED
            or config.secagg_honest_contributors):
        return config
    honest = max(1, roster.honest_contributors(config.effective_threshold))
    return replace(config, secagg_honest_contributors=honest)


def secure_trust(config: RunConfig, roster: Roster | None,
                 noise_multiplier: float) -> SecureTrust | None:
    """The run's t, c, h and distributed z (None without secure aggregation or roster).

    ``noise_multiplier``: the z the server sends with distributed noise (0 otherwise).
    """
    if roster is None or not config.secagg_enabled:
        return None
    distributed = config.dp_noise_mode == NoiseMode.DISTRIBUTED
    return SecureTrust(threshold=config.effective_threshold, colluders=roster.colluders,
                       honest=config.honest_contributors if distributed else 0,
                       noise_multiplier=noise_multiplier if distributed else 0.0)


def curious_noise_multiplier(noise_multiplier: float, *, honest: int) -> float:
    """The noise multiplier a participant that subtracts its own share sees, with c = 0.

    It knows its own share, so of h honest shares (each of stddev z * s / sqrt(h), s the
    sensitivity) h - 1 remain: stddev z * s * sqrt((h - 1) / h). Returns 0 for h = 1 (no
    noise left: epsilon is infinite).

    Raises
    ------
    ValueError
        If ``honest`` < 1 or ``noise_multiplier`` < 0.
    """
    if honest < 1 or not noise_multiplier >= 0:
        raise ValueError(f"need h >= 1 and z >= 0, got h={honest!r}, z={noise_multiplier!r}")
    return noise_multiplier * math.sqrt((honest - 1) / honest)


def curious_participant_epsilon(history: Iterable[Entry], *, honest: int, delta: float,
                                accountant: AccountantName = AccountantName.RDP) -> float:
    """Epsilon against a participant that subtracts its own share, over ``history``.

    ``history`` holds distributed-noise entries (z, sample rate, steps), as a ledger records
    them; each z becomes ``curious_noise_multiplier(z, honest=h)`` and the project's Opacus
    accounting gives the epsilon at ``delta`` (infinite when h = 1).
    """
    entries = [(curious_noise_multiplier(z, honest=honest), q, steps) for z, q, steps in history]
    return epsilon_from_history(entries, delta=delta, accountant=accountant)


def statement_lines(trust: SecureTrust, *, rounds: int, delta: float,
                    accountant: AccountantName) -> list[str]:
    """The privacy statement's paragraph on collusion: t, c and h as numbers, and what holds.

    With distributed noise and c = 0, it gives the epsilon a participant that subtracts its
    own share faces over the run's ``rounds`` completed rounds (a hospital that contributed to
    each: one entry (z, 1, 1) per round, as its ledger records them) next to the ledger's for
    the same rounds. With c >= 1 the ledger's epsilon holds against up to c curious
    participants.
    """
    t, c, h = trust.threshold, trust.colluders, trust.honest
    numbers = f"t = {t}, c = {c}" + (f", h = {h}" if trust.distributed else "")
    if not trust.distributed:
        return [f"**Collusion assumed** ({numbers}): every round's sum holds at least t = {t} "
                f"contributions; the guarantee of secure aggregation holds while at most c = "
                f"{c} hospital(s) collude with the server.", ""]
    if c >= 1:
        return [f"**Collusion assumed** ({numbers}): every hospital added 1/sqrt({h}) of the "
                f"noise, so any round's sum of t = {t} contributions holds at least h = t - c "
                f"= {h} honest shares even after c = {c} curious or colluding participants "
                f"subtract their own: the ledger's epsilon above holds against up to c = {c} "
                "curious participants (and a server colluding with them).", ""]
    history = [(trust.noise_multiplier, 1.0, 1)] * rounds
    ledger = epsilon_from_history(history, delta=delta, accountant=accountant)
    curious = curious_participant_epsilon(history, honest=h, delta=delta, accountant=accountant)
    z_seen = curious_noise_multiplier(trust.noise_multiplier, honest=h)
    return [f"**No collusion assumed** ({numbers}): the ledger's epsilon holds only against "
            f"the server and outsiders. A participant that subtracts its own share from a "
            f"round's sum sees another hospital's update under the other h - 1 = {h - 1} honest "
            f"shares: noise multiplier z * sqrt((h - 1) / h) = {z_seen:.4g} instead of z = "
            f"{trust.noise_multiplier:.4g}. Over this run's {rounds} round(s), a hospital that "
            f"contributed to each faces epsilon {_eps(curious)} against such a participant, "
            f"where its ledger accounts {_eps(ledger)} for the same rounds (Opacus "
            f"{accountant.upper()}, delta {delta:g}). A roster with c >= 1 (h = t - c) makes "
            "the ledger's epsilon hold against curious participants too.", ""]


def _eps(value: float) -> str:
    return "+inf (unbounded)" if math.isinf(value) else f"{value:.4f}"
