"""A hospital's privacy ledger: its own budget and every charged round, on its own disk.

Mechanism: each output is charged as a GaussianRoundEvent before release; epsilon is recomputed
by Opacus from the stored (z, q, steps) entries and a charge past the budget is refused.
Sensitivity: as stated by the events. The adversary (the server) never reads this file and
cannot raise its budget. Unit of privacy: "patient" and "hospital", each held to the budget.
"""

import dataclasses
import logging
import os
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
    LedgerEntry,
    LedgerState,
    locked,
    parse_ledger,
    render_ledger,
    write_atomic,
)
from common.errors import LedgerError, PrivacyBudgetExceededError

__all__ = ["LedgerEntry", "PrivacyLedger"]

logger = logging.getLogger(__name__)

Entry = tuple[float, float, int]


class PrivacyLedger:
    """A hospital's privacy spend, persisted as one JSON file (see ``open``).

    File format (key order as written; ``checksum`` is the SHA-256 of the canonical JSON,
    sorted keys and no spaces, of the other four keys)::

        {"hospital": NAME, "budget": {"epsilon": E, "delta": D}, "accountant": "rdp",
         "entries": [{"run": RUN, "round": R, "level": "patient", "noise_multiplier": Z,
                      "sample_rate": Q, "steps": S}, ...], "checksum": HEX}

    Every epsilon is computed at the budget's delta, per level, by Opacus on that level's
    entries. Writes are atomic and serialised across processes by an advisory lock, so
    concurrent workers (e.g. Ray) charging one ledger never lose an entry; every query rereads
    the file, so an edited, garbled or deleted ledger fails the next call with LedgerError.
    """

    def __init__(self, path: Path, state: LedgerState) -> None:
        """Bind to a ledger file already read; use ``PrivacyLedger.open`` instead."""
        self._path = path
        self._state = state

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        hospital: str,
        budget_epsilon: float,
        budget_delta: float,
        accountant: AccountantName = "rdp",
    ) -> "PrivacyLedger":
        """Open a hospital's ledger, creating it (and its directory) if missing.

        Parameters
        ----------
        path : path-like
            The ledger file, on the hospital's own disk.
        hospital : str
            The hospital's name; must match the name stored in an existing ledger.
        budget_epsilon, budget_delta : float
            The budget from the hospital's node config: epsilon > 0, delta in (0, 1). For a
            new ledger they become its budget. For an existing one the stored budget stays
            authoritative: a lower epsilon or delta lowers it (persisted), a higher one is
            ignored with a warning. No argument can raise a stored budget; raising it is a
            deliberate act outside this API (a hospital administrator's, never the server's).
        accountant : {"rdp", "prv"}
            The accountant; an existing ledger must already use it.

        Raises
        ------
        ValueError
            If a budget value, the hospital name or the accountant name is invalid.
        LedgerError
            If the file is unreadable, malformed, tampered with, belongs to another hospital,
            or uses a different accountant than requested.
        """
        epsilon = validate_epsilon(budget_epsilon, "budget_epsilon")
        delta = validate_delta(budget_delta, "budget_delta")
        if accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
        if not isinstance(hospital, str) or not hospital:
            raise ValueError(f"hospital must be a non-empty string, got {hospital!r}")
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        with locked(file):
            if not file.exists():
                new = LedgerState(hospital, epsilon, delta, accountant, ())
                write_atomic(file, render_ledger(new))
            state = _read(file, hospital)
            if state.accountant != accountant:
                raise LedgerError(
                    f"privacy ledger {file} uses accountant {state.accountant!r}, not "
                    f"{accountant!r}; a ledger keeps one accountant for its whole history"
                )
            if epsilon > state.budget_epsilon or delta > state.budget_delta:
                logger.warning(
                    "Privacy ledger %s keeps its stored budget (epsilon=%s, delta=%s): "
                    "a budget is never raised",
                    file, state.budget_epsilon, state.budget_delta,
                )
            if epsilon < state.budget_epsilon or delta < state.budget_delta:
                state = dataclasses.replace(
                    state,
                    budget_epsilon=min(epsilon, state.budget_epsilon),
                    budget_delta=min(delta, state.budget_delta),
                )
                write_atomic(file, render_ledger(state))
                logger.info(
                    "Privacy ledger %s: budget lowered to epsilon=%s, delta=%s",
                    file, state.budget_epsilon, state.budget_delta,
                )
        return cls(file, state)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> "PrivacyLedger":
        """Open an existing ledger read-only, to inspect it (creates and changes nothing).

        Raises
        ------
        LedgerError
            If the file is missing, unreadable, malformed or tampered with.
        """
        file = Path(path)
        if not file.is_file():
            raise LedgerError(f"no privacy ledger at {file}")
        with locked(file):
            state = _read(file, parse_ledger_owner(file))
        return cls(file, state)

    @property
    def path(self) -> Path:
        """The ledger file."""
        return self._path

    @property
    def hospital(self) -> str:
        """The hospital this ledger belongs to."""
        return self._state.hospital

    @property
    def budget_epsilon(self) -> float:
        """The budget's epsilon, which each level must stay within on its own."""
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
    def entries(self) -> tuple[LedgerEntry, ...]:
        """Every charged round in charge order, as last read from disk."""
        return self._state.entries

    def history(self, level: Level) -> list[Entry]:
        """Return the Opacus history ``[(z, q, steps), ...]`` of one level, from disk."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        with locked(self._path):
            self._state = _read(self._path, self.hospital)
        return _history(self._state, level)

    def epsilon_spent(self, level: Level) -> float:
        """Return the epsilon spent so far at ``level`` (0.0 before any charge)."""
        return self._epsilon(self.history(level))

    def projected_epsilon(self, event: GaussianRoundEvent) -> float:
        """Return the epsilon at ``event.level`` after also charging ``event``."""
        return self._epsilon([*self.history(event.level), event.as_opacus_entry()])

    def would_exceed(self, event: GaussianRoundEvent) -> bool:
        """Return True if charging ``event`` would push its level past the budget's epsilon."""
        return self.projected_epsilon(event) > self.budget_epsilon

    def remaining(self, level: Level) -> float:
        """Return the budget's epsilon minus the epsilon spent at ``level``, floored at 0."""
        return max(0.0, self.budget_epsilon - self.epsilon_spent(level))

    def rounds_left(self, event: GaussianRoundEvent, *, limit: int = 10_000) -> int:
        """Return how many more rounds charged as ``event`` fit in the budget, at most limit."""
        history = self.history(event.level)
        return max_repetitions(
            history,
            event,
            budget_epsilon=self.budget_epsilon,
            delta=self.budget_delta,
            accountant=self.accountant,  # type: ignore[arg-type]
            limit=limit,
        )

    def charge(self, run: str | int, round: int, event: GaussianRoundEvent) -> bool:
        """Record ``event`` for (run, round, event.level), persisted before this returns.

        Idempotent: if that key is already charged with the same event, nothing changes and
        False is returned. The caller must then not release a *newly* noised output for that
        round (it would go uncounted); it may resend the reply it already made, or decline.

        Returns
        -------
        bool
            True if the entry was added and fsync'ed to disk before this returned.

        Raises
        ------
        PrivacyBudgetExceededError
            If the charge would push the level past the budget; nothing is recorded.
        LedgerError
            If the key is already charged with a different event, or the file cannot be read
            or written; nothing may be released then.
        """
        if isinstance(run, bool) or not isinstance(run, str | int) or str(run) == "":
            raise ValueError(f"run must be a non-empty string, got {run!r}")
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise ValueError(f"round must be an integer >= 0, got {round!r}")
        if not isinstance(event, GaussianRoundEvent):
            raise ValueError(f"event must be a GaussianRoundEvent, got {type(event).__name__}")
        entry = LedgerEntry(run=str(run), round=round, event=event)
        with locked(self._path):
            state = _read(self._path, self.hospital)
            self._state = state
            for old in state.entries:
                if (old.run, old.round, old.event.level) == (entry.run, round, event.level):
                    if old.event != event:
                        raise LedgerError(
                            f"run {entry.run!r} round {round} ({event.level} level) is already "
                            f"charged with {old.event}, not {event}"
                        )
                    return False
            projected = self._epsilon([*_history(state, event.level), event.as_opacus_entry()])
            if projected > state.budget_epsilon:
                raise PrivacyBudgetExceededError(
                    f"hospital {state.hospital!r}: run {entry.run!r} round {round} would bring "
                    f"{event.level}-level epsilon to {projected:.4g} > budget "
                    f"{state.budget_epsilon:.4g} (delta={state.budget_delta:g})"
                )
            updated = dataclasses.replace(state, entries=(*state.entries, entry))
            write_atomic(self._path, render_ledger(updated))
            self._state = updated
        return True

    def _epsilon(self, history: list[Entry]) -> float:
        return epsilon_from_history(
            history, delta=self.budget_delta, accountant=self.accountant  # type: ignore[arg-type]
        )


def _history(state: LedgerState, level: str) -> list[Entry]:
    return [e.event.as_opacus_entry() for e in state.entries if e.event.level == level]


def parse_ledger_owner(path: Path) -> str:
    """Return the hospital a ledger file names (validated in full by ``_read``)."""
    try:
        return parse_ledger(path.read_text(encoding="utf-8")).hospital
    except (OSError, UnicodeDecodeError) as error:
        raise LedgerError(f"privacy ledger {path} is unreadable: {error}") from error
    except LedgerError as error:
        raise LedgerError(f"privacy ledger {path} is rejected: {error}") from error


def _read(path: Path, hospital: str) -> LedgerState:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise LedgerError(f"privacy ledger {path} is unreadable: {error}") from error
    try:
        state = parse_ledger(text)
    except LedgerError as error:
        raise LedgerError(f"privacy ledger {path} is rejected: {error}") from error
    if state.hospital != hospital:
        raise LedgerError(
            f"privacy ledger {path} belongs to hospital {state.hospital!r}, not {hospital!r}"
        )
    return state
