"""The privacy ledger's file: strict JSON, checksum, hash chain, atomic writes, a lock.

Mechanism: an unreadable, malformed or edited file is rejected, never repaired; a write lands
whole or not at all. Every write bumps ``sequence`` and stores the previous state's checksum in
``previous``, so the checksum of a state (its *head*) covers the whole chain of writes; a head
kept elsewhere (``write_head``/``read_head``, at the location the ledger records) then exposes
an older copy restored in place. Each entry also records what the ledger stood at after it
(``EntryFigures``: the epsilon per level and track, computed by Opacus when it was charged), so
reading the figures needs no accountant. Two tracks (``LedgerTrack``): releases of training
rows and of test rows, each with its own budget (``test_budget``; absent: the training
budget), and the pinned split (``split``: the digest of which rows are test rows) that lets
them compose in parallel (``common.dp.ledger_tracks``). The file keeps the training track's
entries in ``entries`` and the test track's in ``test_entries``, each with ``at``, its place in
the order of charges, so a reader of ``entries`` alone (the run-directory contract's checker)
composes the training track against the training budget. Sensitivity assumptions live in the
stored events. The adversary (the server) never reads this file; the checksum guards against
corruption and hand edits, not a hospital's own administrator. Unit of privacy: the level
stored with each entry.
"""

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.dp.accounting import validate_delta, validate_epsilon
from common.dp.events import GaussianRoundEvent
from common.errors import LedgerError
from common.wire.modes import LedgerTrack

try:  # POSIX advisory locks; without them (Windows) one process per ledger is assumed.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "GENESIS",
    "EntryFigures",
    "LedgerEntry",
    "LedgerHead",
    "LedgerState",
    "SplitPin",
    "advance",
    "locked",
    "parse_ledger",
    "read_head",
    "render_ledger",
    "write_atomic",
    "write_head",
]

_LEGACY_TOP_KEYS = {"hospital", "budget", "accountant", "entries", "checksum"}
_TOP_KEYS = _LEGACY_TOP_KEYS | {"sequence", "previous"}
_HEADED_TOP_KEYS = _TOP_KEYS | {"head_file"}
_ENTRY_KEYS = {"run", "round", "level", "noise_multiplier", "sample_rate", "steps"}
_HOSPITAL_ENTRY_KEYS = _ENTRY_KEYS | {"noise_mode"}
_FIGURES_KEYS = {"delta", "epsilon", "budget_epsilon", "rounds_left"}
_TEST_FIGURES_KEYS = {"test_delta", "test_budget_epsilon"}  # with epsilon.test
_TRACK_TOP_KEYS = {"test_budget", "split", "split_key", "test_entries"}  # written once set
_LEGACY_HEAD_KEYS = {"hospital", "sequence", "head"}
_HEAD_KEYS = _LEGACY_HEAD_KEYS | {"ledger"}
_LOG_ANCHOR_KEY = "log"  # the disclosure log's anchor, checked by common.dp.disclosure_log
GENESIS = "0" * 64  # the "previous" of a ledger's first state


@dataclass(frozen=True, slots=True)
class EntryFigures:
    """What a ledger stood at right after one entry was charged, computed by Opacus then.

    Attributes
    ----------
    delta : float
        The budget's delta at charge time, at which both epsilons are computed.
    patient, hospital : float
        Epsilon spent at each level, composing every entry up to and including this one
        (``math.inf``: unbounded, stored as JSON null).
    budget_epsilon : float
        The budget's epsilon at charge time (``rounds_left`` is relative to it).
    rounds_left : int | None
        How many more rounds like this one fit in that budget (at every level it counts at);
        None where it was not computed (the PRV accountant: seconds per charge).
    test : float | None
        Patient-level epsilon of the test track (releases of test rows) at ``test_delta``;
        None in entries charged before the ledger had a test track.
    test_delta, test_budget_epsilon : float | None
        The test track's budget at charge time (None with ``test``).

    ``patient`` is the training track's patient-level epsilon; ``hospital`` composes both
    tracks (the unit is the whole data set).
    """

    delta: float
    patient: float
    hospital: float
    budget_epsilon: float
    rounds_left: int | None
    test: float | None = None
    test_delta: float | None = None
    test_budget_epsilon: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the figures as stored in an entry's ``after`` (infinite epsilon as null)."""
        spent = [("patient", self.patient), ("hospital", self.hospital)]
        if self.test is not None:
            spent.append(("test", self.test))
        data: dict[str, Any] = {
            "delta": self.delta,
            "epsilon": {name: (value if math.isfinite(value) else None) for name, value in spent},
            "budget_epsilon": self.budget_epsilon, "rounds_left": self.rounds_left}
        if self.test is not None:
            data.update(test_delta=self.test_delta, test_budget_epsilon=self.test_budget_epsilon)
        return data


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One charged release: its key (run, round, event.level, track), the event, the figures.

    ``after`` is None in entries charged before the ledger recorded figures. ``track`` says
    whose rows the release was computed from (training rows unless stored as "test").
    """

    run: str
    round: int
    event: GaussianRoundEvent
    after: EntryFigures | None = None
    track: LedgerTrack = LedgerTrack.TRAIN

    @property
    def key(self) -> tuple[str, int, str, str]:
        """What identifies the entry: (run, round, level, track); charged at most once."""
        return (self.run, self.round, self.event.level.value, self.track.value)

    def to_json(self) -> dict[str, Any]:
        """Return the entry as stored in the ledger file (hospital level: with noise_mode)."""
        data: dict[str, Any] = {
            "run": self.run,
            "round": self.round,
            "level": self.event.level,
            "noise_multiplier": self.event.noise_multiplier,
            "sample_rate": self.event.sample_rate,
            "steps": self.event.steps,
        }
        if self.event.level == "hospital":
            data["noise_mode"] = self.event.noise_mode
        if self.track != LedgerTrack.TRAIN:
            data["track"] = self.track.value
        if self.after is not None:
            data["after"] = self.after.to_json()
        return data


@dataclass(frozen=True, slots=True)
class SplitPin:
    """The split a ledger's releases were made under: which of the hospital's rows are test rows.

    ``digest`` is the SHA-256 (hex) the hospital computes from its own rows
    (``common.tasks.split``); a run whose split has another digest is declined. ``parallel``
    is True when the split was pinned before any release: every entry is then on one side for
    the ledger's whole life, and the tracks compose in parallel. A split pinned on a ledger
    that already held entries (made under an unknown split) is not parallel: the tracks then
    compose sequentially.
    """

    digest: str
    parallel: bool

    def to_json(self) -> dict[str, Any]:
        """Return the pin as stored in the ledger's ``split``."""
        return {"digest": self.digest, "parallel": self.parallel}


@dataclass(frozen=True, slots=True)
class LedgerState:
    """Everything a ledger file holds, validated (epsilon > 0, delta in (0, 1)).

    ``sequence`` counts the writes (0: a file from before the hash chain, read as such);
    ``previous`` is the head of the state this one replaced (``GENESIS`` for the first);
    ``head`` is this state's checksum as read from disk ("" for a state not yet written);
    ``head_file`` is where the ledger records its head file is kept (an absolute path; None
    in ledgers from before the record). ``test_budget_epsilon`` and ``test_budget_delta`` are
    the test track's budget (None: the training budget's, as in ledgers from before the
    track); ``split`` the pinned split (None: not pinned yet); ``split_key`` the hospital's
    secret (hex) that keys the hash assigning its rows to a side (task csv), never sent.
    """

    hospital: str
    budget_epsilon: float
    budget_delta: float
    accountant: str
    entries: tuple[LedgerEntry, ...]
    sequence: int = 0
    previous: str = GENESIS
    head: str = ""
    head_file: str | None = None
    test_budget_epsilon: float | None = None
    test_budget_delta: float | None = None
    split: SplitPin | None = None
    split_key: str | None = None

    @property
    def test_epsilon(self) -> float:
        """The test track's budget epsilon (the training budget's when none is set)."""
        return (self.budget_epsilon if self.test_budget_epsilon is None
                else self.test_budget_epsilon)

    @property
    def test_delta(self) -> float:
        """The test track's budget delta (the training budget's when none is set)."""
        return self.budget_delta if self.test_budget_delta is None else self.test_budget_delta


@dataclass(frozen=True, slots=True)
class LedgerHead:
    """The (sequence, head checksum) of the ledger's latest write, kept outside the ledger.

    ``ledger`` is the absolute path of the ledger file written (None in older head files).
    """

    hospital: str
    sequence: int
    head: str
    ledger: str | None = None


def advance(state: LedgerState, **changes: Any) -> LedgerState:
    """Return the next state in the chain: ``changes`` applied, sequence + 1, linked to head."""
    return dataclasses.replace(state, **changes, sequence=state.sequence + 1,
                               previous=state.head or GENESIS, head="")


def _checksum(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name}")


def _parse_entries(data: dict[str, Any]) -> tuple[LedgerEntry, ...]:
    """Every entry in the order charged: ``entries`` with ``test_entries`` put back at their ``at``.

    A test entry in ``entries`` (stored so by this week's first two-track ledgers) is read as it
    stands, in its place.
    """
    entries = [_parse_entry(i, raw) for i, raw in enumerate(data["entries"])]
    tests = data.get("test_entries", [])
    if not isinstance(tests, list):
        raise LedgerError("test_entries must be a list")
    places: list[int] = []
    total = len(entries) + len(tests)
    for index, raw in enumerate(tests):
        where = f"test_entries[{index}]"
        at = raw.get("at") if isinstance(raw, dict) else None
        if (isinstance(at, bool) or not isinstance(at, int)
                or not (places[-1] if places else -1) < at < total):
            raise LedgerError(f"{where}.at must be an integer, increasing, below the number of "
                              f"entries of both lists ({total}), got {at!r}")
        if raw.get("track") != LedgerTrack.TEST:
            raise LedgerError(f'{where}.track must be "test", got {raw.get("track")!r}')
        entry = _parse_entry(index, {k: v for k, v in raw.items() if k != "at"}, where)
        places.append(at)
        entries.insert(at, entry)
    return tuple(entries)


def _parse_entry(index: int, raw: object, where: str = "") -> LedgerEntry:
    where = where or f"entries[{index}]"
    if not isinstance(raw, dict) or set(raw) - {"after", "track"} not in (
            _ENTRY_KEYS, _HOSPITAL_ENTRY_KEYS):
        raise LedgerError(f"{where} must be an object with keys {sorted(_ENTRY_KEYS)} "
                          '(and "noise_mode" at hospital level, "after" and "track" '
                          "optionally)")
    if raw.get("track", LedgerTrack.TEST) != LedgerTrack.TEST:
        raise LedgerError(f"{where}.track must be \"test\" when present (training "
                          f"entries carry none), got {raw['track']!r}")
    if "noise_mode" in raw and raw["level"] != "hospital":
        raise LedgerError(f"{where}: noise_mode is for hospital-level entries only")
    if not isinstance(raw["run"], str) or not raw["run"]:
        raise LedgerError(f"{where}.run must be a non-empty string, got {raw['run']!r}")
    if isinstance(raw["round"], bool) or not isinstance(raw["round"], int) or raw["round"] < 0:
        raise LedgerError(f"{where}.round must be an integer >= 0, got {raw['round']!r}")
    try:
        event = GaussianRoundEvent(
            noise_multiplier=raw["noise_multiplier"],
            sample_rate=raw["sample_rate"],
            steps=raw["steps"],
            level=raw["level"],
            noise_mode=raw.get("noise_mode"),  # absent in old ledgers: "local"
        )
    except ValueError as error:
        raise LedgerError(f"{where}: {error}") from error
    after = _parse_figures(f"{where}.after", raw["after"]) if "after" in raw else None
    track = LedgerTrack.TEST if "track" in raw else LedgerTrack.TRAIN
    return LedgerEntry(run=raw["run"], round=raw["round"], event=event, after=after,
                       track=track)


def _parse_figures(where: str, raw: object) -> EntryFigures:
    """Check an entry's ``after`` object (see ``EntryFigures``)."""
    epsilon = raw.get("epsilon") if isinstance(raw, dict) else None
    with_test = isinstance(epsilon, dict) and "test" in epsilon
    keys = _FIGURES_KEYS | (_TEST_FIGURES_KEYS if with_test else set())
    if (not isinstance(raw, dict) or set(raw) != keys or not isinstance(epsilon, dict)
            or set(epsilon) - {"test"} != {"patient", "hospital"}):
        raise LedgerError(f"{where} must be an object with keys {sorted(_FIGURES_KEYS)} (and "
                          f"{sorted(_TEST_FIGURES_KEYS)} with a test epsilon), its epsilon one "
                          'with keys "patient" and "hospital" (and "test")')
    spent = {}
    for level, value in epsilon.items():
        if value is None:
            spent[level] = math.inf
        elif (isinstance(value, bool) or not isinstance(value, int | float)
              or not math.isfinite(value) or value < 0):
            raise LedgerError(f"{where}.epsilon.{level} must be a number >= 0 or null "
                              f"(unbounded), got {value!r}")
        else:
            spent[level] = float(value)
    rounds_left = raw["rounds_left"]
    if rounds_left is not None and (isinstance(rounds_left, bool)
                                    or not isinstance(rounds_left, int) or rounds_left < 0):
        raise LedgerError(f"{where}.rounds_left must be an integer >= 0 or null, "
                          f"got {rounds_left!r}")
    try:
        delta = validate_delta(raw["delta"], f"{where}.delta")
        budget = validate_epsilon(raw["budget_epsilon"], f"{where}.budget_epsilon")
    except ValueError as error:
        raise LedgerError(str(error)) from error
    test = test_delta = test_budget = None
    if with_test:
        test = spent["test"]
        try:
            test_delta = validate_delta(raw["test_delta"], f"{where}.test_delta")
            test_budget = validate_epsilon(raw["test_budget_epsilon"],
                                           f"{where}.test_budget_epsilon")
        except ValueError as error:
            raise LedgerError(str(error)) from error
    return EntryFigures(delta=delta, patient=spent["patient"], hospital=spent["hospital"],
                        budget_epsilon=budget, rounds_left=rounds_left, test=test,
                        test_delta=test_delta, test_budget_epsilon=test_budget)


def parse_ledger(text: str) -> LedgerState:
    """Parse and check a ledger file's text.

    A file without ``sequence`` and ``previous`` (written before the hash chain) reads as
    sequence 0; the ledger upgrades it on its next write.

    Raises
    ------
    LedgerError
        Saying why: invalid JSON (NaN and Infinity included), missing or unknown keys,
        checksum mismatch, an out-of-range budget or entry, or a (run, round, level) twice.
    """
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise LedgerError(f"not valid JSON ({error})") from error
    if not isinstance(data, dict) or set(data) - _TRACK_TOP_KEYS not in (
            _HEADED_TOP_KEYS, _TOP_KEYS, _LEGACY_TOP_KEYS):
        raise LedgerError(f"must be a JSON object with exactly the keys {sorted(_TOP_KEYS)} "
                          f'(and "head_file", {sorted(_TRACK_TOP_KEYS)} optionally)')
    payload = {key: value for key, value in data.items() if key != "checksum"}
    if data["checksum"] != _checksum(payload):
        raise LedgerError("checksum mismatch: the file was edited or corrupted")
    if not isinstance(data["hospital"], str) or not data["hospital"]:
        raise LedgerError(f"hospital must be a non-empty string, got {data['hospital']!r}")
    budget = data["budget"]
    if not isinstance(budget, dict) or set(budget) != {"epsilon", "delta"}:
        raise LedgerError('budget must be an object with keys "epsilon" and "delta"')
    if data["accountant"] not in ("rdp", "prv"):
        raise LedgerError(f"unknown accountant {data['accountant']!r}")
    if not isinstance(data["entries"], list):
        raise LedgerError("entries must be a list")
    try:
        epsilon = validate_epsilon(budget["epsilon"], "budget.epsilon")
        delta = validate_delta(budget["delta"], "budget.delta")
    except ValueError as error:
        raise LedgerError(str(error)) from error
    sequence, previous = data.get("sequence", 0), data.get("previous", GENESIS)
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise LedgerError(f"sequence must be an integer >= 0, got {sequence!r}")
    if "sequence" in data and sequence < 1:
        raise LedgerError(f"sequence must be >= 1 in a chained ledger, got {sequence!r}")
    if not _is_hex_digest(previous):
        raise LedgerError(f"previous must be a SHA-256 hex digest, got {previous!r}")
    head_file = data.get("head_file")
    if "head_file" in data and (not isinstance(head_file, str)
                                or not os.path.isabs(head_file)):
        raise LedgerError(f"head_file must be an absolute path, got {head_file!r}")
    entries = _parse_entries(data)
    keys = [entry.key for entry in entries]
    if len(set(keys)) != len(keys):
        raise LedgerError("the same (run, round, level, track) is charged twice")
    test_epsilon, test_delta = _parse_test_budget(data.get("test_budget"))
    return LedgerState(data["hospital"], epsilon, delta, data["accountant"], entries,
                       sequence=sequence, previous=previous, head=data["checksum"],
                       head_file=head_file, test_budget_epsilon=test_epsilon,
                       test_budget_delta=test_delta, split=_parse_split(data.get("split")),
                       split_key=_parse_split_key(data.get("split_key")))


def _parse_split_key(raw: object) -> str | None:
    """The ledger's ``split_key`` (absent: None): 64 hex digits."""
    if raw is None:
        return None
    if not _is_hex_digest(raw):
        raise LedgerError("split_key must be 64 hex digits")
    return str(raw)


def _parse_test_budget(raw: object) -> tuple[float | None, float | None]:
    """The ledger's ``test_budget`` (absent: None, None, i.e. the training budget)."""
    if raw is None:
        return None, None
    if not isinstance(raw, dict) or set(raw) != {"epsilon", "delta"}:
        raise LedgerError('test_budget must be an object with keys "epsilon" and "delta"')
    try:
        return (validate_epsilon(raw["epsilon"], "test_budget.epsilon"),
                validate_delta(raw["delta"], "test_budget.delta"))
    except ValueError as error:
        raise LedgerError(str(error)) from error


def _parse_split(raw: object) -> SplitPin | None:
    """The ledger's pinned ``split`` (absent: None)."""
    if raw is None:
        return None
    if (not isinstance(raw, dict) or set(raw) != {"digest", "parallel"}
            or not _is_hex_digest(raw["digest"]) or not isinstance(raw["parallel"], bool)):
        raise LedgerError('split must be an object with "digest" (a SHA-256 hex digest) and '
                          '"parallel" (true or false)')
    return SplitPin(raw["digest"], raw["parallel"])


def _is_hex_digest(value: object) -> bool:
    return (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value))


def render_ledger(state: LedgerState) -> tuple[str, str]:
    """Return ``(file text, head)``: the documented key order, indented, checksum last.

    ``head_file`` is written only when the state records one.

    The head is the checksum: SHA-256 of the canonical JSON of every other key, including
    ``previous``, so it commits to the whole chain. ``state.sequence`` must be >= 1 (use
    ``advance``); legacy files are only ever read, never written.
    """
    if state.sequence < 1:
        raise ValueError(f"a written ledger state needs sequence >= 1, got {state.sequence}")
    payload: dict[str, Any] = {
        "hospital": state.hospital,
        "budget": {"epsilon": float(state.budget_epsilon), "delta": float(state.budget_delta)},
        "accountant": state.accountant,
        "sequence": state.sequence,
        "previous": state.previous,
    }
    if state.head_file is not None:
        payload["head_file"] = state.head_file
    if state.test_budget_epsilon is not None:
        payload["test_budget"] = {"epsilon": float(state.test_budget_epsilon),
                                  "delta": float(state.test_delta)}
    if state.split is not None:
        payload["split"] = state.split.to_json()
    if state.split_key is not None:
        payload["split_key"] = state.split_key
    payload["entries"] = [entry.to_json() for entry in state.entries
                          if entry.track == LedgerTrack.TRAIN]
    tests = [{**entry.to_json(), "at": at} for at, entry in enumerate(state.entries)
             if entry.track != LedgerTrack.TRAIN]
    if tests:
        payload["test_entries"] = tests
    payload["checksum"] = _checksum(payload)
    return json.dumps(payload, indent=2, allow_nan=False) + "\n", payload["checksum"]


def write_head(path: Path, state: LedgerState, ledger: Path) -> None:
    """Write the head of ``state`` (as written to ``ledger``) to ``path`` atomically.

    The file is ``{"hospital": NAME, "sequence": N, "head": HEX, "ledger": ABSOLUTE PATH}``,
    plus the disclosure log's anchor (``"log"``, ``common.dp.disclosure_log``) kept as it was;
    its directory is created if needed.

    Raises
    ------
    LedgerError
        If the file cannot be written.
    """
    data = {"hospital": state.hospital, "sequence": state.sequence, "head": state.head,
            "ledger": os.path.abspath(ledger)}
    with contextlib.suppress(OSError, ValueError, AttributeError):  # none yet: nothing to keep
        data.update({key: value for key, value in json.loads(path.read_text("utf-8")).items()
                     if key == _LOG_ANCHOR_KEY})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LedgerError(f"cannot write ledger head file {path}: {error}") from error
    write_atomic(path, json.dumps(data, indent=2) + "\n", what="ledger head file")


def read_head(path: Path) -> LedgerHead | None:
    """Return the head stored in ``path``, or None if the file does not exist.

    Raises
    ------
    LedgerError
        If the file exists but cannot be read or is not a valid head file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise LedgerError(f"ledger head file {path} is unreadable: {error}") from error
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise LedgerError(f"ledger head file {path} is not valid JSON ({error})") from error
    if (not isinstance(data, dict) or set(data) - {_LOG_ANCHOR_KEY} not in (_HEAD_KEYS,
                                                                          _LEGACY_HEAD_KEYS)
            or not isinstance(data["hospital"], str)
            or isinstance(data["sequence"], bool) or not isinstance(data["sequence"], int)
            or not _is_hex_digest(data["head"])
            or not isinstance(data.get("ledger", ""), str)):
        raise LedgerError(f"ledger head file {path} must hold {sorted(_HEAD_KEYS)} "
                          "(hospital name, write count, SHA-256 hex head, ledger file)")
    return LedgerHead(data["hospital"], data["sequence"], data["head"], data.get("ledger"))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``.<name>.lock`` beside ``path`` for the block.

    The lock file is separate because ``os.replace`` swaps the ledger's inode. Locks are per
    open file, so do not nest this for one path in one process (it would deadlock).
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        handle = open(lock_path, "a+")  # noqa: SIM115 - held for the duration of the block
    except OSError as error:
        raise LedgerError(f"cannot lock privacy ledger {path}: {error}") from error
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_atomic(path: Path, text: str, *, what: str = "privacy ledger") -> None:
    """Replace ``path`` with ``text`` so that a crash leaves either the old or the new file.

    Writes a temporary file in the same directory, fsyncs it, ``os.replace``s it over ``path``
    and fsyncs the directory; the temporary file is removed on failure.

    Raises
    ------
    LedgerError
        If any step fails (disk full, permissions, ...); ``path`` is then unchanged.
    """
    try:
        descriptor, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as error:
        raise LedgerError(f"cannot write {what} {path}: {error}") from error
