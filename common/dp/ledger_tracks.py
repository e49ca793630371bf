"""How a ledger's entries compose: two tracks (training rows, test rows) and two levels.

Mechanism: every entry is a Gaussian release (``GaussianRoundEvent``) of either the hospital's
training rows or its test rows (``LedgerTrack``). Sensitivity: as each event states. What
composes with what (each history is handed to Opacus as it is; nothing is averaged):

- patient level, training track: every training-track entry (a hospital-level release as
  (z, 1, steps): one record moves a clipped update by at most 2C, the same adjacency);
- patient level, test track: every test-track entry (hospital-level ones likewise);
- hospital level: every entry of both tracks (the unit is the whole data set, training and test
  rows alike); a patient-level entry enters it as (0, 1, steps), i.e. unbounded.

A patient is on one side of the split for the ledger's whole life when the split was pinned
before the first release (``SplitPin.parallel``): the tracks then compose in parallel and a
patient's epsilon is the larger of the two (at the larger delta). Otherwise (a ledger with
entries from before the pin, or none pinned) they compose sequentially: a patient's epsilon is
Opacus on both tracks' patient-level entries together (at most their sum), and every charge is
also checked against that composition and the training budget (fail closed).
"""

from collections.abc import Iterable
from dataclasses import dataclass

from common.dp.events import GaussianRoundEvent
from common.dp.ledger_store import LedgerEntry, LedgerState
from common.wire.modes import LedgerTrack, PrivacyLevel

Entry = tuple[float, float, int]


@dataclass(frozen=True, slots=True)
class Constraint:
    """One budget a charge must respect: a history (with the charge), its budget and delta."""

    name: str
    history: list[Entry]
    budget_epsilon: float
    delta: float
    level: PrivacyLevel = PrivacyLevel.PATIENT  # the level the history is of


def as_level(event: GaussianRoundEvent, level: str) -> Entry:
    """``event`` as one entry of ``level``'s Opacus history (see the module docstring)."""
    if level == event.level:
        return event.as_opacus_entry()
    if level == PrivacyLevel.PATIENT:  # a hospital-level release: same z, no amplification
        return (event.noise_multiplier, 1.0, event.steps)
    return (0.0, 1.0, event.steps)  # a patient-level release at hospital level: unbounded


def history(entries: Iterable[LedgerEntry], level: str, track: LedgerTrack | None, *,
            exclude_run: str | int | None = None) -> list[Entry]:
    """The Opacus history of ``level`` on ``track`` (None: both tracks together).

    At hospital level the track is ignored: the unit is the whole data set.
    """
    skip = None if exclude_run is None else str(exclude_run)
    return [as_level(e.event, level) for e in entries
            if e.run != skip and (level == PrivacyLevel.HOSPITAL or track is None
                                  or e.track == track)]


def parallel(state: LedgerState) -> bool:
    """Whether the tracks compose in parallel: a split pinned before any release (or no
    release yet: the first charge pins its split, in parallel).
    """
    if state.split is None:
        return not state.entries
    return state.split.parallel


def constraints(state: LedgerState, event: GaussianRoundEvent, track: LedgerTrack, *,
                exclude_run: str | int | None = None, with_event: bool = True
                ) -> list[Constraint]:
    """Every budget charging ``event`` on ``track`` must stay within.

    The patient level of ``track`` against that track's budget; for a hospital-level event
    also the hospital level (both tracks) against the training budget; without a parallel
    split also both tracks' patient-level composition against the training budget. Each
    history includes ``event`` unless ``with_event`` is False (the priors, for calibration);
    ``exclude_run`` leaves one run's entries out.
    """
    entries = state.entries

    def extra(level: PrivacyLevel) -> list[Entry]:
        return [as_level(event, level)] if with_event else []

    own = (state.budget_epsilon, state.budget_delta) if track == LedgerTrack.TRAIN else (
        state.test_epsilon, state.test_delta)
    out = [Constraint(f"{track.value}-track patient-level",
                      [*history(entries, PrivacyLevel.PATIENT, track, exclude_run=exclude_run),
                       *extra(PrivacyLevel.PATIENT)], *own)]
    if event.level == PrivacyLevel.HOSPITAL:
        out.insert(0, Constraint(
            "hospital-level", [*history(entries, PrivacyLevel.HOSPITAL, None,
                                        exclude_run=exclude_run), *extra(PrivacyLevel.HOSPITAL)],
            state.budget_epsilon, state.budget_delta, PrivacyLevel.HOSPITAL))
    if not parallel(state):
        out.append(Constraint(
            "patient-level (both tracks composed: no split pinned before the first release)",
            [*history(entries, PrivacyLevel.PATIENT, None, exclude_run=exclude_run),
             *extra(PrivacyLevel.PATIENT)], state.budget_epsilon, state.budget_delta))
    return out
