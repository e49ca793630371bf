"""A hospital's privacy ledger: its own budget and every charged round, on its own disk.

Mechanism: each output is charged as a GaussianRoundEvent before release; epsilon is recomputed
by Opacus from the stored (z, q, steps) entries and a charge past the budget is refused.
Sensitivity: as stated by the events. The adversary (the server) never reads this file and
cannot raise its budget, reset it (``open`` never creates a ledger) or roll it back unnoticed
(a hash chain whose head is also kept in a head file apart from the ledger, see
``PrivacyLedger``). Each entry records the epsilon per level after it, computed by Opacus at
charge time, so the figures can be shown without importing the accountant.

One patient, one budget. Unit of privacy "patient": the patient-level epsilon composes EVERY
entry of the ledger. A hospital-level release is also a patient-level mechanism: changing one
patient's record changes the hospital's clipped update anywhere inside the C-ball, i.e. by at
most 2C, which is exactly the replace-one-hospital sensitivity that both noise modes ("local"
and "distributed") account. So a hospital-level entry's noise multiplier z carries over
unchanged as a patient-level Gaussian step with sample rate 1 (no amplification) and its steps
(1 per round). Unit of privacy "hospital": only hospital-level entries protect a whole hospital;
a patient-level (DP-SGD) release bounds one record's influence, not a hospital's, so after any
patient-level entry the hospital-level epsilon is unbounded (+inf) and a hospital-level charge
is refused. In Opacus terms a patient-level entry enters the hospital-level history as
(z=0, q=1, steps), which Opacus accounts as infinite epsilon.

Two tracks: releases of training rows and of test rows (evaluation), each with its own budget
(``test_budget``, set at creation; default the training budget). Once the hospital's split is
pinned (``pin_split``: the digest of which rows are test rows; a run with another split is
declined) before any release, the tracks compose in parallel: a patient's epsilon is the
larger of the two. How every history is composed: ``common.dp.ledger_tracks``.
"""

import dataclasses
import logging
import os
from functools import lru_cache
from pathlib import Path

from common.dp.accounting import (
    ACCOUNTANTS,
    AccountantName,
    epsilon_from_history,
    max_repetitions,
    validate_delta,
    validate_epsilon,
)
from common.dp.events import LEVELS, GaussianRoundEvent, Level
from common.dp.ledger_store import (
    EntryFigures,
    LedgerEntry,
    LedgerState,
    SplitPin,
    advance,
    locked,
    parse_ledger,
    read_head,
    render_ledger,
    write_atomic,
    write_head,
)
from common.dp.ledger_tracks import Constraint, as_level, constraints, history, parallel
from common.errors import LedgerError, PrivacyBudgetExceededError
from common.wire.modes import LedgerTrack, PrivacyLevel

__all__ = ["UNBOUNDED_REASON", "EntryFigures", "LedgerEntry", "PrivacyLedger", "SplitMismatch",
           "SplitPin", "init_command"]

logger = logging.getLogger(__name__)

Entry = tuple[float, float, int]

UNBOUNDED_REASON = ("this ledger already holds patient-level releases; the hospital-level "
                    "guarantee is unbounded")


class SplitMismatch(LedgerError):
    """The run's split (which rows are test rows) differs from the one the ledger pinned."""


def init_command(path: Path, *, hospital: str | None = None, head: Path | None = None) -> str:
    """Return the command that creates a ledger at ``path`` (for error messages).

    ``--hospital`` is named when it differs from the file's stem (the command's default),
    ``--head`` when given.
    """
    options = "" if hospital is None or hospital == path.stem else f" --hospital {hospital}"
    options += "" if head is None else f" --head {head}"
    return f"fedcare budget init {path}{options} --epsilon E --delta D"


class PrivacyLedger:
    """A hospital's privacy spend, persisted as one JSON file (see ``create`` and ``open``).

    File format (key order as written; ``checksum`` is the SHA-256 of the canonical JSON,
    sorted keys and no spaces, of all the other keys)::

        {"hospital": NAME, "budget": {"epsilon": E, "delta": D}, "accountant": "rdp",
         "sequence": N, "previous": HEX, "head_file": "/ABSOLUTE/PATH.head",
         "test_budget": {"epsilon": ET, "delta": DT},
         "split": {"digest": HEX, "parallel": true}, "split_key": HEX,
         "entries": [{"run": RUN, "round": R, "level": "patient", "noise_multiplier": Z,
                      "sample_rate": Q, "steps": S,
                      "after": {"delta": D, "epsilon": {"patient": EP, "hospital": null,
                                                        "test": ET_SPENT},
                                "budget_epsilon": E, "rounds_left": K, "test_delta": DT,
                                "test_budget_epsilon": ET}},
                     {..., "level": "patient", ..., "track": "test", "after": ...},
                     {..., "level": "hospital", ..., "noise_mode": "local", "after": ...}],
         "checksum": HEX}

    ``test_budget`` is the test track's budget (absent in older ledgers: the training
    budget's), ``split`` the pinned split (absent until the first release pins it),
    ``split_key`` the secret keying task csv's split (made with the ledger; never sent), an
    entry's ``track`` "test" for a release of test rows (absent: training rows).
    ``sequence`` counts the writes and ``previous`` is the checksum of the state this one
    replaced, so the checksum (the *head*) commits to the whole history of writes. Files from
    before the chain (no ``sequence``/``previous``; hospital entries without ``noise_mode``,
    read as "local") are read as sequence 0 and upgraded by ``open``. ``after`` holds the
    figures the ledger stood at after the entry (``EntryFigures``: epsilon per level at D,
    null for unbounded, computed by Opacus when the entry was charged; absent in older
    entries).

    Rollback detection: after every write the head (hospital, sequence, checksum) is written
    atomically to the head file, and every read refuses a ledger whose head differs from it.
    The head file is, in order: ``head_path`` as given (node config ``ledger-head-path``), the
    one the ledger records (``head_file``, written on every write), ``default_head_path`` as
    given (the hospital's ``$FEDCARE_HOME/heads/<name>.head``, see ``client.privacy``), else
    ``.<name>.head`` beside the ledger (a copy is always written there too). With the head
    file apart from the ledger's directory, deleting that directory or restoring an older copy
    of it is refused: a missing ledger whose head file records one is never recreated. With
    only the head beside the ledger, restoring the ledger together with it (a whole-directory
    backup) is NOT detected. A ledger exactly one write ahead of its head file, chained to it,
    is accepted and the head repaired (a crash between the two writes); anything else is
    refused.

    Every epsilon is computed at the budget's delta by Opacus on a level's history (see the
    module docstring for how the levels compose). Writes are atomic and serialised across
    processes by an advisory lock, so concurrent workers charging one ledger never lose an
    entry; every query rereads the file, so an edited, garbled, deleted or rolled-back ledger
    fails the next call with LedgerError.
    """

    def __init__(self, path: Path, state: LedgerState, head_path: Path | None = None, *,
                 default_head_path: Path | None = None, writable: bool = True) -> None:
        """Bind to a ledger file already read; use ``create``, ``open`` or ``read`` instead."""
        self._path = path
        self._state = state
        self._head_choice = (head_path, default_head_path)
        self._writable = writable

    @property
    def _heads(self) -> tuple[Path, ...]:
        return _head_files(self._path, self._state, *self._head_choice)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        hospital: str,
        budget_epsilon: float,
        budget_delta: float,
        accountant: AccountantName = AccountantName.RDP,
        head_path: str | os.PathLike[str] | None = None,
        test_budget_epsilon: float | None = None,
        test_budget_delta: float | None = None,
    ) -> "PrivacyLedger":
        """Create a hospital's ledger (and its directory) with this budget and no entries.

        Parameters
        ----------
        path : path-like
            The ledger file, on the hospital's own disk; must not exist yet.
        hospital : str
            The hospital's name, stored in the ledger.
        budget_epsilon, budget_delta : float
            The budget for the ledger's whole life: epsilon > 0, delta in (0, 1).
        accountant : {"rdp", "prv"}
            The Opacus accountant, kept for the ledger's whole history.
        head_path : path-like, optional
            The head file, apart from the ledger's directory (ideally on another volume); the
            ledger records it. Default: beside the ledger (see the class docstring), which
            ``fedcare budget init`` and the ClientApp never use.
        test_budget_epsilon, test_budget_delta : float, optional
            The test track's budget (releases of test rows: evaluation); default the
            training budget's values.

        Raises
        ------
        ValueError
            If a budget value, the hospital name or the accountant name is invalid.
        LedgerError
            If the ledger already exists, or a head file already records a ledger there
            (a new ledger would silently reset the budget), or a file cannot be written.
        """
        epsilon = validate_epsilon(budget_epsilon, "budget_epsilon")
        delta = validate_delta(budget_delta, "budget_delta")
        test_epsilon = (epsilon if test_budget_epsilon is None
                        else validate_epsilon(test_budget_epsilon, "test_budget_epsilon"))
        test_delta = (delta if test_budget_delta is None
                      else validate_delta(test_budget_delta, "test_budget_delta"))
        _validate_accountant(accountant)
        _validate_hospital(hospital)
        file = Path(path)
        heads = _head_files(file, None, _optional_path(head_path), None)
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LedgerError(f"cannot create the directory of privacy ledger {file}: "
                              f"{error}") from error
        with locked(file):
            if file.exists() or file.is_symlink():
                raise LedgerError(f"privacy ledger {file} already exists; a ledger is created "
                                  "once and never replaced (its budget would reset)")
            for head_file in heads:
                recorded = read_head(head_file)
                if recorded is not None:
                    which = recorded.ledger or "its ledger"
                    raise LedgerError(
                        f"ledger head file {head_file} already records a ledger of hospital "
                        f"{recorded.hospital!r} at write {recorded.sequence} ({which}): "
                        f"creating {file} would start a fresh budget for the same patients. "
                        "Restore (or keep using) that ledger; only the hospital's "
                        "administrator may remove the head file to start a new budget")
            state = advance(LedgerState(hospital, epsilon, delta, accountant, (),
                                        head_file=str(heads[0]), test_budget_epsilon=test_epsilon,
                                        test_budget_delta=test_delta,
                                        split_key=os.urandom(32).hex()))
            _write(file, state, heads)
            state = _read(file, hospital, (None, None), repair=False)
        return cls(file, state)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        hospital: str,
        budget_epsilon: float | None = None,
        budget_delta: float | None = None,
        accountant: AccountantName | None = None,
        head_path: str | os.PathLike[str] | None = None,
        default_head_path: str | os.PathLike[str] | None = None,
    ) -> "PrivacyLedger":
        """Open a hospital's existing ledger; never creates one.

        Parameters
        ----------
        path : path-like
            The ledger file, made by ``create`` (``fedcare budget init``).
        hospital : str
            The hospital's name; must match the name stored in the ledger.
        budget_epsilon, budget_delta : float, optional
            A budget from the hospital's node config. The stored budget stays authoritative:
            a lower epsilon or delta lowers it (persisted), a higher one is ignored with a
            warning. No argument can raise a stored budget.
        accountant : {"rdp", "prv"}, optional
            If given, the ledger must already use it.
        head_path : path-like, optional
            The head file to check, overriding the one the ledger records.
        default_head_path : path-like, optional
            The head file of a ledger that records none, and where a missing ledger's head
            is looked for (see the class docstring).

        Raises
        ------
        ValueError
            If a budget value, the hospital name or the accountant name is invalid.
        LedgerError
            If the ledger is missing (naming ``fedcare budget init`` when its head file is
            missing too, else saying that it was deleted), unreadable, malformed, tampered
            with, rolled back (its head differs from the head file), belongs to another
            hospital, or uses a different accountant than requested.
        """
        epsilon = None if budget_epsilon is None else validate_epsilon(budget_epsilon,
                                                                       "budget_epsilon")
        delta = None if budget_delta is None else validate_delta(budget_delta, "budget_delta")
        if accountant is not None:
            _validate_accountant(accountant)
        _validate_hospital(hospital)
        file = Path(path)
        choice = (_optional_path(head_path), _optional_path(default_head_path))
        _require_exists(file, hospital, *choice)
        with locked(file):
            _require_exists(file, hospital, *choice)
            state = _read(file, hospital, choice, repair=True)
            if accountant is not None and state.accountant != accountant:
                raise LedgerError(
                    f"privacy ledger {file} uses accountant {state.accountant!r}, not "
                    f"{accountant!r}; a ledger keeps one accountant for its whole history"
                )
            new_epsilon = state.budget_epsilon if epsilon is None else epsilon
            new_delta = state.budget_delta if delta is None else delta
            if new_epsilon > state.budget_epsilon or new_delta > state.budget_delta:
                logger.warning(
                    "Privacy ledger %s keeps its stored budget (epsilon=%s, delta=%s): "
                    "a budget is never raised",
                    file, state.budget_epsilon, state.budget_delta,
                )
            lowered = (new_epsilon < state.budget_epsilon or new_delta < state.budget_delta)
            heads = _head_files(file, state, *choice)
            if lowered or state.sequence == 0 or state.head_file != str(heads[0]):
                # Lower the budget, upgrade to the chain, or record where the head is kept.
                state = advance(state, budget_epsilon=min(new_epsilon, state.budget_epsilon),
                                budget_delta=min(new_delta, state.budget_delta),
                                head_file=str(heads[0]))
                _write(file, state, heads)
                state = _read(file, hospital, choice, repair=False)
                if lowered:
                    logger.info("Privacy ledger %s: budget lowered to epsilon=%s, delta=%s",
                                file, state.budget_epsilon, state.budget_delta)
        return cls(file, state, choice[0], default_head_path=choice[1])

    @classmethod
    def read(
        cls, path: str | os.PathLike[str], *, head_path: str | os.PathLike[str] | None = None,
        default_head_path: str | os.PathLike[str] | None = None,
    ) -> "PrivacyLedger":
        """Open an existing ledger read-only, to inspect it (creates and changes nothing).

        ``head_path`` and ``default_head_path`` as for ``open``.

        Raises
        ------
        LedgerError
            If the file is missing, unreadable, malformed, tampered with or rolled back.
        """
        file = Path(path)
        choice = (_optional_path(head_path), _optional_path(default_head_path))
        _require_exists(file, None, *choice)
        with locked(file):
            state = _read(file, parse_ledger_owner(file), choice, repair=False)
        return cls(file, state, choice[0], default_head_path=choice[1], writable=False)

    @property
    def path(self) -> Path:
        """The ledger file."""
        return self._path

    @property
    def head_path(self) -> Path:
        """The head file checked on every read (see the class docstring for which)."""
        return self._heads[0]

    @property
    def hospital(self) -> str:
        """The hospital this ledger belongs to."""
        return self._state.hospital

    @property
    def budget_epsilon(self) -> float:
        """The budget's epsilon, which each level must stay within."""
        return self._state.budget_epsilon

    @property
    def budget_delta(self) -> float:
        """The budget's delta, at which every epsilon here is computed."""
        return self._state.budget_delta

    @property
    def accountant(self) -> str:
        """The Opacus accountant, "rdp" or "prv"."""
        return self._state.accountant

    @property
    def test_budget_epsilon(self) -> float:
        """The test track's budget epsilon (releases of test rows)."""
        return self._state.test_epsilon

    @property
    def test_budget_delta(self) -> float:
        """The test track's budget delta, at which the test track's epsilon is computed."""
        return self._state.test_delta

    @property
    def split_key(self) -> bytes:
        """The hospital's secret that keys the hash putting each row on a side (task csv);
        empty for a ledger from before it (its csv split is then an unkeyed hash).
        """
        return bytes.fromhex(self._state.split_key) if self._state.split_key else b""

    @property
    def split(self) -> SplitPin | None:
        """The pinned split (as last read), None before the first release pinned one."""
        return self._state.split

    @property
    def tracks_parallel(self) -> bool:
        """Whether the tracks compose in parallel (a split pinned before any release)."""
        return parallel(self._state)

    @property
    def sequence(self) -> int:
        """How many writes the ledger has had (as last read)."""
        return self._state.sequence

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """Every charged round in charge order, as last read from disk."""
        return self._state.entries

    @property
    def recorded_figures(self) -> EntryFigures | None:
        """The figures recorded with the last entry (as last read), None if there are none.

        Computed by Opacus when that entry was charged, at the delta and budget they name:
        they are the ledger's current figures while those equal the budget's.
        """
        return self._state.entries[-1].after if self._state.entries else None

    def _reread(self) -> LedgerState:
        with locked(self._path):
            self._state = _read(self._path, self.hospital, self._head_choice,
                                repair=self._writable)
        return self._state

    def history(self, level: Level, *, exclude_run: str | int | None = None,
                track: LedgerTrack | None = LedgerTrack.TRAIN) -> list[Entry]:
        """Return the Opacus history ``[(z, q, steps), ...]`` that ``level``'s epsilon uses.

        Reread from disk. Patient level: every entry of ``track`` (None: both tracks),
        hospital-level ones as (z, 1.0, steps). Hospital level (both tracks, whatever
        ``track``): hospital-level entries, and each patient-level entry as (0.0, 1.0,
        steps) -- no hospital-level noise, infinite epsilon. ``exclude_run`` leaves out one
        run's entries (e.g. to calibrate a run's noise to what earlier runs left).
        """
        _validate_level(level)
        return history(self._reread().entries, level, track, exclude_run=exclude_run)

    def constraints(self, event: GaussianRoundEvent, track: LedgerTrack = LedgerTrack.TRAIN, *,
                    exclude_run: str | int | None = None, with_event: bool = True
                    ) -> list[Constraint]:
        """Every budget charging ``event`` on ``track`` must respect (reread from disk).

        See ``common.dp.ledger_tracks.constraints``; with ``with_event`` False and
        ``exclude_run`` the run's id, the priors a run's noise is calibrated against.
        """
        return constraints(self._reread(), event, track, exclude_run=exclude_run,
                           with_event=with_event)

    def split_problem(self, digest: str) -> str:
        """Why a release made under split ``digest`` may not be charged here ('' if it may).

        Read-only: the split is pinned by the first ``charge`` that names it (or
        ``pin_split``); another digest afterwards is refused.
        """
        state = self._reread()
        if state.split is None or state.split.digest == digest:
            return ""
        return _split_mismatch(self._path, state.split.digest, digest)

    def pin_split(self, digest: str) -> None:
        """Pin the hospital's split (the digest of which rows are test rows), once.

        The first call records it (parallel composition when the ledger has no entry yet);
        later calls with the same digest change nothing.

        Raises
        ------
        SplitMismatch
            If the ledger pinned another split: a patient could then be on both sides.
        LedgerError
            If the ledger is read-only, unreadable or cannot be written.
        """
        if not isinstance(digest, str) or len(digest) != 64 or not all(
                c in "0123456789abcdef" for c in digest):
            raise ValueError(f"digest must be a SHA-256 hex digest, got {digest!r}")
        if not self._writable:
            raise LedgerError(f"privacy ledger {self._path} was opened read-only")
        with locked(self._path):
            state = _read(self._path, self.hospital, self._head_choice, repair=True)
            if state.split is not None and state.split.digest == digest:
                self._state = state
                return
            if state.split is not None:
                raise SplitMismatch(_split_mismatch(self._path, state.split.digest, digest))
            heads = self._heads
            updated = advance(state, split=SplitPin(digest, parallel=not state.entries),
                              head_file=str(heads[0]))
            _write(self._path, updated, heads)
            self._state = _read(self._path, self.hospital, self._head_choice, repair=False)

    def is_hospital_level_unbounded(self) -> bool:
        """Return True if the ledger holds a patient-level entry (reread from disk)."""
        return _has_patient_entries(self._reread())

    def epsilon_spent(self, level: Level, track: LedgerTrack = LedgerTrack.TRAIN) -> float:
        """Return the epsilon spent at ``level`` by Opacus (0.0 before any charge, inf if
        unbounded): patient level on ``track`` at that track's delta; hospital level over both
        tracks at the budget's delta.
        """
        delta = (self.test_budget_delta if level == PrivacyLevel.PATIENT
                 and track == LedgerTrack.TEST else self.budget_delta)
        return self._epsilon(self.history(level, track=track), delta)

    def patient_guarantee(self) -> tuple[float, float, str]:
        """Return a patient's (epsilon, delta, how the tracks composed) over both tracks.

        "parallel" (split pinned before any release): the larger track epsilon, at the larger
        delta. "sequential": Opacus on both tracks' patient-level entries together, at the
        training budget's delta (at most the sum of the two).
        """
        train = self.epsilon_spent(PrivacyLevel.PATIENT)
        if self.tracks_parallel:
            test = self.epsilon_spent(PrivacyLevel.PATIENT, LedgerTrack.TEST)
            return max(train, test), max(self.budget_delta, self.test_budget_delta), "parallel"
        return (self._epsilon(self.history(PrivacyLevel.PATIENT, track=None), self.budget_delta),
                self.budget_delta, "sequential")

    def projected_epsilon(self, event: GaussianRoundEvent, level: Level | None = None,
                          track: LedgerTrack = LedgerTrack.TRAIN) -> float:
        """Return the epsilon at ``level`` (default ``event.level``) on ``track`` after also
        charging ``event`` there.
        """
        level = event.level if level is None else level
        _validate_level(level)
        delta = (self.test_budget_delta if level == PrivacyLevel.PATIENT
                 and track == LedgerTrack.TEST else self.budget_delta)
        return self._epsilon([*self.history(level, track=track), as_level(event, level)], delta)

    def would_exceed(self, event: GaussianRoundEvent,
                     track: LedgerTrack = LedgerTrack.TRAIN) -> str:
        """Return why charging ``event`` on ``track`` would exceed a budget ('' if it fits).

        Every constraint of ``common.dp.ledger_tracks.constraints``: the track's patient level,
        the hospital level for a hospital-level event, the composition without a parallel split.
        """
        for constraint in self.constraints(event, track):
            spent = self._epsilon(constraint.history, constraint.delta)
            if spent > constraint.budget_epsilon:
                return (f"{constraint.name} epsilon would reach {spent:.4g} > budget "
                        f"{constraint.budget_epsilon:.4g} (delta={constraint.delta:g})")
        return ""

    def remaining(self, level: Level, track: LedgerTrack = LedgerTrack.TRAIN) -> float:
        """Return the track's budget epsilon minus the epsilon spent at ``level``, floored at 0."""
        budget = (self.test_budget_epsilon if level == PrivacyLevel.PATIENT
                  and track == LedgerTrack.TEST else self.budget_epsilon)
        return max(0.0, budget - self.epsilon_spent(level, track))

    def rounds_left(self, event: GaussianRoundEvent, *, limit: int = 10_000,
                    track: LedgerTrack = LedgerTrack.TRAIN) -> int:
        """Return how many more releases charged as ``event`` on ``track`` fit, at most limit.

        The minimum over the constraints the charge must respect (see ``would_exceed``).
        """
        return _rounds_left(self._reread(), event, track, limit=limit)

    def charge(self, run: str | int, round: int, event: GaussianRoundEvent,
               track: LedgerTrack = LedgerTrack.TRAIN, *, split: str | None = None) -> bool:
        """Record ``event`` for (run, round, event.level, track), persisted before this returns.

        Idempotent: if that key is already charged with the same event, nothing changes and
        False is returned. The caller must then not release a *newly* noised output for that
        round (it would go uncounted); it may resend the reply it already made, or decline.

        Budget checks (``common.dp.ledger_tracks.constraints``): the track's patient-level
        epsilon must stay within the track's budget; for a hospital-level event also the
        hospital-level epsilon (both tracks) within the training budget, and no patient-level
        entry may be on the ledger (``UNBOUNDED_REASON``); without a parallel split also both
        tracks composed within the training budget. The entry records the figures after it
        (``EntryFigures``): each track's and level's epsilon and, with the RDP accountant,
        the releases like it left (about 1 ms; PRV would take seconds). ``split``: the digest
        of the split the release was made under; the first charge that names one pins it, in
        the same write (parallel tracks when the ledger had no entry yet).

        Returns
        -------
        bool
            True if the entry was added and fsync'ed to disk before this returned.

        Raises
        ------
        PrivacyBudgetExceededError
            If the charge would push a level past the budget, or it is a hospital-level
            charge on a ledger with patient-level entries; nothing is recorded.
        SplitMismatch
            If ``split`` differs from the pinned split; nothing is recorded.
        LedgerError
            If the key is already charged with a different event, or the file cannot be read
            or written (or was rolled back); nothing may be released then.
        """
        if isinstance(run, bool) or not isinstance(run, str | int) or str(run) == "":
            raise ValueError(f"run must be a non-empty string, got {run!r}")
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise ValueError(f"round must be an integer >= 0, got {round!r}")
        if not isinstance(event, GaussianRoundEvent):
            raise ValueError(f"event must be a GaussianRoundEvent, got {type(event).__name__}")
        track = LedgerTrack(track)
        if not self._writable:
            raise LedgerError(f"privacy ledger {self._path} was opened read-only")
        run = str(run)
        with locked(self._path):
            state = _read(self._path, self.hospital, self._head_choice, repair=True)
            self._state = state
            entry = LedgerEntry(run=run, round=round, event=event, track=track)
            for old in state.entries:
                if old.key == entry.key:
                    if old.event != event:
                        raise LedgerError(
                            f"run {run!r} round {round} ({event.level} level, {track} track) "
                            f"is already charged with {old.event}, not {event}"
                        )
                    return False
            where = f"hospital {state.hospital!r}: run {run!r} round {round} ({track} track)"
            if split is not None and state.split is not None and state.split.digest != split:
                raise SplitMismatch(_split_mismatch(self._path, state.split.digest, split))
            pin = (SplitPin(split, parallel=not state.entries)
                   if split is not None and state.split is None else state.split)
            state = dataclasses.replace(state, split=pin)
            if event.level == "hospital" and _has_patient_entries(state):
                raise PrivacyBudgetExceededError(f"{where}: {UNBOUNDED_REASON}")
            for constraint in constraints(state, event, track):
                spent = self._epsilon(constraint.history, constraint.delta)
                if spent > constraint.budget_epsilon:
                    raise PrivacyBudgetExceededError(
                        f"{where} would bring {constraint.name} epsilon to {spent:.4g} > "
                        f"budget {constraint.budget_epsilon:.4g} (delta={constraint.delta:g})")
            entry = LedgerEntry(run=run, round=round, event=event, track=track,
                                after=self._figures_after(state, entry))
            heads = self._heads
            updated = advance(state, entries=(*state.entries, entry), head_file=str(heads[0]))
            _write(self._path, updated, heads)
            self._state = _read(self._path, self.hospital, self._head_choice, repair=False)
        return True

    def _epsilon(self, history: list[Entry], delta: float | None = None) -> float:
        return epsilon_from_history(
            history, delta=self.budget_delta if delta is None else delta,
            accountant=self.accountant  # type: ignore[arg-type]
        )

    def _figures_after(self, state: LedgerState, entry: LedgerEntry) -> EntryFigures:
        """The figures after charging ``entry`` on ``state`` (its histories with the entry)."""
        after = dataclasses.replace(state, entries=(*state.entries, entry))
        rounds_left = (_rounds_left(after, entry.event, entry.track)
                       if state.accountant == "rdp" else None)
        patient = self._epsilon(history(after.entries, PrivacyLevel.PATIENT, LedgerTrack.TRAIN),
                                state.budget_delta)
        test = self._epsilon(history(after.entries, PrivacyLevel.PATIENT, LedgerTrack.TEST),
                             state.test_delta)
        hospital = self._epsilon(history(after.entries, PrivacyLevel.HOSPITAL, None),
                                 state.budget_delta)
        return EntryFigures(delta=state.budget_delta, patient=patient, hospital=hospital,
                            budget_epsilon=state.budget_epsilon, rounds_left=rounds_left,
                            test=test, test_delta=state.test_delta,
                            test_budget_epsilon=state.test_epsilon)


def _validate_level(level: object) -> None:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def _validate_accountant(accountant: object) -> None:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")


def _validate_hospital(hospital: object) -> None:
    if not isinstance(hospital, str) or not hospital:
        raise ValueError(f"hospital must be a non-empty string, got {hospital!r}")


def _split_mismatch(path: Path, pinned: str, asked: str) -> str:
    return (f"privacy ledger {path} pinned the split {pinned[:16]} (which rows are test rows), "
            f"but this run's split is {asked[:16]}: a patient could be a training row in one "
            "run and a test row in another, so the two tracks would no longer compose in "
            "parallel. Use the split the ledger pinned (the same task, data file and split "
            "settings), or a new ledger for the new split")


def _has_patient_entries(state: LedgerState) -> bool:
    return any(e.event.level == "patient" for e in state.entries)


def _rounds_left(state: LedgerState, event: GaussianRoundEvent, track: LedgerTrack, *,
                 limit: int = 10_000) -> int:
    """How many more releases like ``event`` on ``track`` fit, over every constraint."""
    out = limit
    for constraint in constraints(state, event, track, with_event=False):
        z, q, steps = as_level(event, constraint.level)
        repeated = GaussianRoundEvent(noise_multiplier=z, sample_rate=q, steps=steps,
                                      level=PrivacyLevel.PATIENT)
        out = min(out, max_repetitions(constraint.history, repeated,
                                       budget_epsilon=constraint.budget_epsilon,
                                       delta=constraint.delta,
                                       accountant=state.accountant,  # type: ignore[arg-type]
                                       limit=limit))
    return out


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(os.path.abspath(value))


def _head_files(path: Path, state: LedgerState | None, head_path: Path | None,
                default_head_path: Path | None) -> tuple[Path, ...]:
    """The head files written after each write; the first one is checked on every read.

    The first is ``head_path``, else the one ``state`` records, else ``default_head_path``,
    else the one beside the ledger (always written too, as the copy an administrator may
    restore the head from).
    """
    beside = Path(os.path.abspath(path.with_name(f".{path.name}.head")))
    recorded = None if state is None or state.head_file is None else Path(state.head_file)
    primary = next((p for p in (head_path, recorded, default_head_path) if p is not None),
                   beside)
    primary = Path(os.path.abspath(primary))
    return (beside,) if primary == beside else (primary, beside)


def _require_exists(file: Path, hospital: str | None, head_path: Path | None,
                    default_head_path: Path | None) -> None:
    """Refuse a missing ledger: deleted (its head file records it) or never created."""
    if file.is_file():
        return
    head = head_path or default_head_path
    recorded = None if head is None else read_head(head)
    if recorded is not None and recorded.ledger not in (None, os.path.abspath(file)):
        raise LedgerError(
            f"no privacy ledger at {file}, and the head file {head} records another ledger of "
            f"hospital {recorded.hospital!r}, {recorded.ledger} (write {recorded.sequence}): "
            "one hospital keeps one ledger, since a second would be a second budget for the "
            "same patients. Use that ledger (node config ledger-path), or move it here"
        )
    if recorded is not None:
        raise LedgerError(
            f"privacy ledger {file} is missing, but its head file {head} records write "
            f"{recorded.sequence} of hospital {recorded.hospital!r}: the ledger was deleted or "
            "moved. Refusing, since a new ledger would reset the budget: restore the ledger "
            f"(a copy at least as recent as write {recorded.sequence}); `fedcare budget init` "
            "refuses while the head file records it"
        )
    where = "" if head is None else f" (nor a head file at {head})"
    raise LedgerError(
        f"no privacy ledger at {file}{where}: fedcare never starts a fresh budget on its own. "
        "If this hospital has no ledger yet, create it once with "
        f"`{init_command(file, hospital=hospital, head=head)}`; if it had one, restore it "
        "(a deleted ledger is not a new budget)"
    )


def _write(file: Path, state: LedgerState, heads: tuple[Path, ...]) -> None:
    """Write ``state`` to the ledger, then its head to every head file (each atomically)."""
    text, head = render_ledger(state)
    write_atomic(file, text)
    written = dataclasses.replace(state, head=head)
    for head_file in heads:
        write_head(head_file, written, file)


def parse_ledger_owner(path: Path) -> str:
    """Return the hospital a ledger file names (validated in full by ``_read``)."""
    try:
        return parse_ledger(path.read_text(encoding="utf-8")).hospital
    except (OSError, UnicodeDecodeError) as error:
        raise LedgerError(f"privacy ledger {path} is unreadable: {error}") from error
    except LedgerError as error:
        raise LedgerError(f"privacy ledger {path} is rejected: {error}") from error


@lru_cache(maxsize=8)
def _parse(text: str) -> LedgerState:
    """Return ``parse_ledger(text)``, remembered by the file's exact text.

    A round rereads the file several times; the same bytes give the same validated state, so
    nothing stale can come back.
    """
    return parse_ledger(text)


def _read(path: Path, hospital: str, head_choice: tuple[Path | None, Path | None], *,
          repair: bool) -> LedgerState:
    """Read and validate the ledger, and check it against its head file (under the lock).

    ``head_choice``: the (head_path, default_head_path) that pick the head file with the
    ledger's own record (``_head_files``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        _require_exists(path, hospital, *head_choice)
        raise  # pragma: no cover - _require_exists raised
    except (OSError, UnicodeDecodeError) as error:
        raise LedgerError(f"privacy ledger {path} is unreadable: {error}") from error
    try:
        state = _parse(text)
    except LedgerError as error:
        raise LedgerError(f"privacy ledger {path} is rejected: {error}") from error
    if state.hospital != hospital:
        raise LedgerError(
            f"privacy ledger {path} belongs to hospital {state.hospital!r}, not {hospital!r}"
        )
    _check_head(path, state, _head_files(path, state, *head_choice)[0], repair=repair)
    return state


def _check_head(path: Path, state: LedgerState, head_file: Path, *, repair: bool) -> None:
    recorded = read_head(head_file)
    both = f"privacy ledger {path} (write {state.sequence}) and its head file {head_file}"
    if recorded is None:
        if state.sequence == 0:
            return  # a ledger from before the chain: upgraded by its next write
        raise LedgerError(
            f"{both}: the head file is missing. Refusing the ledger, since it cannot be told "
            "from an older copy restored in place; mount or restore the head file's volume "
            f"(if this ledger never used that head file, its administrator may copy the head "
            f"kept beside it, {path.with_name(f'.{path.name}.head')}, there)"
        )
    if recorded.hospital != state.hospital:
        raise LedgerError(f"{both}: the head file belongs to hospital {recorded.hospital!r}, "
                          f"not {state.hospital!r}")
    if (recorded.sequence, recorded.head) == (state.sequence, state.head):
        return
    if state.sequence == recorded.sequence + 1 and state.previous == recorded.head:
        # Interrupted between writing the ledger and its head: the ledger is the newer one.
        if repair:
            write_head(head_file, state, path)
        return
    if state.sequence <= recorded.sequence:
        raise LedgerError(
            f"{both} disagree: the head file records write {recorded.sequence}, the ledger is "
            f"at write {state.sequence}. An older copy of the ledger was restored (or the head "
            "file belongs to another ledger); refusing it, since its budget would be reset"
        )
    raise LedgerError(
        f"{both} disagree: the ledger is at write {state.sequence} but the head file records "
        f"write {recorded.sequence}, which the ledger does not follow. The head file is older "
        "than the ledger or belongs to another one; refusing both"
    )
