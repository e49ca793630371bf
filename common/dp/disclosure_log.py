"""A hospital's disclosure log: one hash-chained record per request answered or declined.

What it is for: the hospital's data-protection officer reconstructs from the hospital's own
files what left, when, to whom and at what privacy cost. The log lives beside the ledger
(``<ledger stem>.disclosures.jsonl``), one JSON object per line, appended and fsync'ed, never
rewritten. Each record holds ``seq`` (1, 2, ...), ``previous`` (the hash of the record before,
``GENESIS`` for the first) and ``hash``, the SHA-256 of the canonical JSON (sorted keys, no
spaces) of every other key, so the last hash commits to the whole log.

Anchoring: after every append the log's ``(count, head)`` is written into the ledger's head
file (key ``log``, beside the ledger's own head; ``common.dp.ledger_store.write_head`` keeps
it), under the ledger's lock. ``verify_log`` then tells apart an intact log, an edited
record (its hash), removed or reordered records (the chain), and a truncated tail or a
restored older copy (fewer records than the anchor, or another hash at the anchored record).
Records written after the last anchor (the ledger could not be opened then) are reported as
not yet anchored: the chain covers them, the anchor does not.

What a record holds is decided by its writer (``client.disclosure_log_mod``,
``fedcare budget init``): field names and sizes, ledger entries and epsilon, decline reasons;
never a model or data value. This module only chains, stores, anchors and checks; it has no
Flower import. Unit of privacy: none (the log is an audit trail, not a release).
"""

import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.dp.ledger_store import GENESIS, locked, write_atomic
from common.errors import FedcareError

if TYPE_CHECKING:
    from common.dp.ledger import PrivacyLedger

__all__ = ["LOG_SUFFIX", "DisclosureLogError", "LogAnchor", "Verification", "anchor_heads",
           "append_anchored", "append_record", "budget_of", "last_record", "ledger_summary",
           "log_path", "read_anchor", "read_records", "record_budget_init", "utc_now",
           "verify_beside", "verify_log", "write_anchor"]

LOG_SUFFIX = ".disclosures.jsonl"
ANCHOR_KEY = "log"  # the head file's key holding the log's anchor
_CHAIN_KEYS = ("seq", "previous", "hash")
_TAIL_BLOCK = 65536  # bytes read from the end to find the last record


class DisclosureLogError(FedcareError):
    """A disclosure log (or its anchor) cannot be read, written or trusted; says which."""


@dataclass(frozen=True, slots=True)
class LogAnchor:
    """Where the log stood at its last anchored append: record count, last hash, its file."""

    count: int
    head: str
    log: str

    def to_json(self) -> dict[str, Any]:
        """The anchor as kept in the head file's ``log`` key."""
        return {"count": self.count, "head": self.head, "path": self.log}


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of checking a log against its chain and its anchor.

    ``records`` are the records read (in order, even when a check failed); ``problems`` each
    say what failed in words (empty: verified); ``unanchored`` counts records after the
    anchored one (covered by the chain only).
    """

    path: Path
    records: tuple[dict[str, Any], ...]
    anchor: LogAnchor | None
    problems: tuple[str, ...]
    unanchored: int

    @property
    def ok(self) -> bool:
        """Whether the chain and the anchor both hold."""
        return not self.problems

    def summary(self) -> str:
        """One line for a console or a page: verified (with what) or the first problem."""
        if self.problems:
            return f"disclosure log {self.path} FAILED verification: " + "; ".join(self.problems)
        if not self.records:
            return f"disclosure log {self.path}: no records yet"
        where = ("not anchored (no head file records it)" if self.anchor is None else
                 f"anchored in the ledger's head file at record {self.anchor.count}")
        tail = ("" if not self.unanchored or self.anchor is None else
                f"; {self.unanchored} later record(s) covered by the chain only")
        return (f"disclosure log {self.path}: {len(self.records)} records, hash chain "
                f"verified, {where}{tail}")


def log_path(ledger_path: Path) -> Path:
    """The disclosure log beside a ledger (``va.json``: ``va.disclosures.jsonl``)."""
    return ledger_path.with_name(ledger_path.stem + LOG_SUFFIX)


def utc_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _canonical(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of every key of ``record`` but ``hash``."""
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(_canonical(body).encode("utf-8")).hexdigest()


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no infinity), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _parse_line(path: Path, number: int, line: str) -> dict[str, Any]:
    where = f"line {number}" if number else "its last line"
    try:
        record = json.loads(line)
    except ValueError as error:
        raise DisclosureLogError(f"disclosure log {path}, {where}: not valid JSON "
                                 f"({error}): edited or corrupted") from error
    if not isinstance(record, dict) or any(key not in record for key in _CHAIN_KEYS):
        raise DisclosureLogError(f"disclosure log {path}, {where}: not a record (needs "
                                 f"{', '.join(_CHAIN_KEYS)}): edited or corrupted")
    return record


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of the log at ``path`` in order ([] if the file does not exist).

    Raises
    ------
    DisclosureLogError
        If the file cannot be read, or a line is not a JSON record with its chain keys.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise DisclosureLogError(f"disclosure log {path} is unreadable: {error}") from error
    return [_parse_line(path, number, line)
            for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def last_record(path: Path) -> dict[str, Any] | None:
    """The log's last record (None if it has none), read from the file's end.

    Raises
    ------
    DisclosureLogError
        If the file cannot be read or its last line is not a record.
    """
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_BLOCK)
            handle.seek(start)
            block = handle.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DisclosureLogError(f"disclosure log {path} is unreadable: {error}") from error
    lines = [line for line in block.split(b"\n") if line.strip()]
    if not lines:
        return None
    if start > 0 and len(lines) == 1:  # one record longer than the block: read it all
        return read_records(path)[-1]
    try:
        return _parse_line(path, 0, lines[-1].decode("utf-8"))
    except UnicodeDecodeError as error:
        raise DisclosureLogError(f"disclosure log {path}: its last line is not UTF-8: edited "
                                 "or corrupted") from error


def append_record(path: Path, fields: Mapping[str, Any]) -> tuple[dict[str, Any], LogAnchor]:
    """Append one record (``fields`` plus its chain keys) to the log and fsync it.

    Not locked: call under the ledger's lock (``append_anchored``), so that appends and head
    writes never interleave. Non-finite floats are stored as null; ``time`` (UTC, ISO 8601)
    is added when ``fields`` has none.

    Returns
    -------
    (record, anchor)
        The record as written and the anchor the log then stands at.

    Raises
    ------
    DisclosureLogError
        If the last record cannot be read, ``fields`` holds a chain key, or the write fails.
    """
    clash = sorted(set(fields) & set(_CHAIN_KEYS))
    if clash:
        raise DisclosureLogError(f"a record may not set the chain keys {clash}")
    last = last_record(path)
    record: dict[str, Any] = {"seq": 1 if last is None else int(last["seq"]) + 1,
                              "previous": GENESIS if last is None else str(last["hash"])}
    record.update(_finite(dict(fields)))
    record.setdefault("time", utc_now())
    record["hash"] = record_hash(record)
    line = (_canonical(record) + "\n").encode("utf-8")
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        raise DisclosureLogError(f"cannot append to disclosure log {path}: {error}") from error
    return record, LogAnchor(record["seq"], record["hash"], os.path.abspath(path))


def read_anchor(head_file: Path) -> LogAnchor | None:
    """The log anchor a ledger head file holds (None: no head file, or no anchor yet).

    Raises
    ------
    DisclosureLogError
        If the head file is unreadable or its ``log`` key is malformed.
    """
    data = _head_data(head_file)
    if data is None or ANCHOR_KEY not in data:
        return None
    raw = data[ANCHOR_KEY]
    if (not isinstance(raw, dict) or set(raw) != {"count", "head", "path"}
            or isinstance(raw["count"], bool) or not isinstance(raw["count"], int)
            or raw["count"] < 1 or not isinstance(raw["head"], str) or len(raw["head"]) != 64
            or not isinstance(raw["path"], str)):
        raise DisclosureLogError(f"ledger head file {head_file}: its {ANCHOR_KEY!r} key must "
                                 'hold "count" (>= 1), "head" (SHA-256 hex) and "path"')
    return LogAnchor(raw["count"], raw["head"], raw["path"])


def _head_data(head_file: Path) -> dict[str, Any] | None:
    try:
        text = head_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise DisclosureLogError(f"ledger head file {head_file} is unreadable: {error}") from error
    try:
        data = json.loads(text)
    except ValueError as error:
        raise DisclosureLogError(f"ledger head file {head_file} is not valid JSON") from error
    if not isinstance(data, dict):
        raise DisclosureLogError(f"ledger head file {head_file} is not a JSON object")
    return data


def write_anchor(head_file: Path, anchor: LogAnchor) -> bool:
    """Set the head file's ``log`` key to ``anchor``, keeping its other keys (atomically).

    Only an existing head file is anchored (a ledger head is never made here, since that
    would look like a ledger to ``fedcare budget init``). Call under the ledger's lock.

    Returns
    -------
    bool
        True if the head file existed and now holds the anchor.

    Raises
    ------
    DisclosureLogError
        If the head file is unreadable or cannot be written.
    """
    data = _head_data(head_file)
    if data is None:
        return False
    data[ANCHOR_KEY] = anchor.to_json()
    try:
        write_atomic(head_file, json.dumps(data, indent=2) + "\n", what="ledger head file")
    except FedcareError as error:
        raise DisclosureLogError(str(error)) from error
    return True


def append_anchored(ledger_path: Path, head_files: tuple[Path, ...],
                    fields: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Append a record to the log beside ``ledger_path`` and anchor it in ``head_files``.

    Under the ledger's lock (the same one its writes take), so a ledger write between the
    append and the anchor cannot drop the anchor. The log's directory must exist.

    Returns
    -------
    (record, anchored)
        The record as written, and whether any head file now anchors it.

    Raises
    ------
    DisclosureLogError
        If the append or an anchor write fails (a record appended but not anchored shows up
        as not yet anchored in ``verify_log``).
    """
    try:
        with locked(ledger_path):
            record, anchor = append_record(log_path(ledger_path), fields)
            anchored = [write_anchor(head, anchor) for head in head_files]
    except FedcareError as error:
        if isinstance(error, DisclosureLogError):
            raise
        raise DisclosureLogError(str(error)) from error
    return record, any(anchored)


def _chain_problems(records: list[dict[str, Any]]) -> Iterator[str]:
    """What breaks the chain: a record whose hash, number or link is wrong (first only)."""
    previous = GENESIS
    for index, record in enumerate(records, start=1):
        if record.get("seq") != index:
            yield (f"record {index} is numbered {record.get('seq')!r}: records were removed, "
                   "inserted or reordered")
            return
        if record.get("previous") != previous:
            yield (f"record {index} does not follow record {index - 1}: records were removed, "
                   "inserted or reordered")
            return
        if record_hash(record) != record.get("hash"):
            yield f"record {index} was edited (its hash does not match its content)"
            return
        previous = str(record["hash"])


def _anchor_problem(path: Path, records: list[dict[str, Any]],
                    anchor: LogAnchor) -> str | None:
    count = len(records)
    if count == 0:
        return (f"the head file anchors {anchor.count} records, but the log is missing or "
                "empty: it was deleted or emptied")
    if count < anchor.count:
        return (f"the head file anchors record {anchor.count}, but the log ends at record "
                f"{count}: its tail was truncated or an older copy was restored")
    if records[anchor.count - 1].get("hash") != anchor.head:
        return (f"record {anchor.count} differs from the one the head file anchors: the log "
                "was replaced or rewritten")
    if os.path.abspath(path) != anchor.log:
        return f"the head file anchors the log {anchor.log}, not {path}"
    return None


def verify_log(path: Path, anchor: LogAnchor | None) -> Verification:
    """Check the log at ``path`` record by record and against ``anchor`` (the head file's).

    Never raises for a bad log: what fails is in ``Verification.problems``.
    """
    try:
        records = read_records(path)
    except DisclosureLogError as error:
        return Verification(path, (), anchor, (str(error),), 0)
    problems = list(_chain_problems(records))
    if anchor is not None:
        problem = _anchor_problem(path, records, anchor)
        if problem is not None:
            problems.append(problem)
    unanchored = max(0, len(records) - (anchor.count if anchor is not None else 0))
    return Verification(path, tuple(records), anchor, tuple(problems), unanchored)


def budget_of(ledger: "PrivacyLedger") -> dict[str, Any]:
    """A ledger's budget per track, as the log records it."""
    return {"epsilon": ledger.budget_epsilon, "delta": ledger.budget_delta,
            "test_epsilon": ledger.test_budget_epsilon, "test_delta": ledger.test_budget_delta,
            "accountant": str(ledger.accountant)}


def ledger_summary(ledger: "PrivacyLedger") -> dict[str, Any]:
    """Where a ledger stands, as a record holds it: its path, write number, entries, budget."""
    return {"path": str(ledger.path), "write": ledger.sequence, "entries": len(ledger.entries),
            "budget": budget_of(ledger)}


def anchor_heads(ledger: "PrivacyLedger") -> tuple[Path, ...]:
    """The head file a ledger's log is anchored in: the one checked on every read.

    Not the copy beside the ledger (an administrator's spare for the ledger's head): two
    fsyncs less per record; restored in place, that copy's older anchor only leaves the
    log's later records reported as covered by the chain alone.
    """
    return (ledger.head_path,)


def record_budget_init(ledger: "PrivacyLedger", *, by: str) -> dict[str, Any]:
    """Append the ``budget-init`` record of a ledger just created (``by``: which command).

    Raises
    ------
    DisclosureLogError
        If the record cannot be appended or anchored.
    """
    fields = {"event": "budget-init", "hospital": ledger.hospital, "by": by,
              "budget": budget_of(ledger), "ledger": ledger_summary(ledger)}
    record, _ = append_anchored(ledger.path, anchor_heads(ledger), fields)
    return record


def verify_beside(ledger: "PrivacyLedger") -> Verification:
    """Verify the log beside ``ledger`` against the anchor in the ledger's head file."""
    path = log_path(ledger.path)
    try:
        anchor = read_anchor(ledger.head_path)
    except DisclosureLogError as error:
        return Verification(path, (), None, (str(error),), 0)
    return verify_log(path, anchor)
