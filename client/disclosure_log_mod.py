"""The ClientApp's disclosure-log mod: every request answered or declined leaves a record.

The outermost Flower mod of the hospital's ClientApp (``client.app.build_client_app``): it
sees the server's request and the reply that leaves (after every other mod, identity proof
included), and appends one record to the hospital's disclosure log beside its ledger
(``common.dp.disclosure_log``) before returning the reply to Flower. A record holds:

- when (UTC), Flower's run id, message id and message type, this node's id and the sender's
  node id (Flower 1.42 gives a ClientApp no SuperLink address: neither ``Context`` nor
  ``Message`` carries it, in deployment or simulation; the sender is the SuperLink's node id,
  Flower's constant 1 in deployment, the engine's value in simulation), fedcare's run id and
  round, the secure-aggregation stage;
- the code digest of the app that ran (``client.app_pinning``);
- what was sent: each record's fields with their type and size in bytes, arrays with their
  shape and dtype (never a value); for an error reply, its reason;
- the ledger's write number, entry count and budget, and the release's ledger entries (key,
  noise, sample rate, steps, the epsilon after them per track and what this one charged),
  marked charged by this request or earlier (a secure round's later stages, a resend);
- the decline's reason.

Budget changes become records of their own: the first time a log sees a ledger's budget
(``budget-recorded``) and whenever it differs from the one last recorded
(``budget-lowered``; a hospital's node config may lower it, never raise it).

Fail closed: if the record cannot be written, the reply is replaced by an error reply, so
nothing leaves unrecorded. A request declined because the ledger's directory was deleted is
not recorded (the log went with it; its anchor in the head file reports the deletion).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod

from client.app_pinning import app_digest, installed_app_dir
from client.privacy import HospitalPrivacy, default_head_path
from common.dp.disclosure_log import (
    DisclosureLogError,
    anchor_heads,
    append_anchored,
    budget_of,
    last_record,
    ledger_summary,
    log_path,
)
from common.dp.ledger import LedgerEntry, PrivacyLedger
from common.errors import LedgerError
from common.secagg.messages import Key
from common.tasks import HospitalData
from common.wire.actions import ledger_round_of
from common.wire.records import (
    node_identity,
    reply_claim,
    reply_outcome,
    request_ref,
    secagg_stage,
)

logger = logging.getLogger(__name__)

PrivacyProvider = Callable[[Context, HospitalData], HospitalPrivacy | None]
LOG_WRITE_FAILED = 70  # the error reply's code when the record cannot be written
_NO_ROWS = np.empty((0, 0), dtype=np.float32)


@lru_cache(maxsize=4)
def code_digest(app_dir: Path) -> str:
    """The digest of the fedcare code under ``app_dir`` (``client.app_pinning.app_digest``)."""
    try:
        return app_digest(app_dir)
    except OSError as error:
        return f"unknown ({error})"


def describe_content(content: RecordDict) -> dict[str, Any]:
    """What a message carries, by name, type and size in bytes: never a value.

    Returns ``{"records": [{"name", "type", "fields": [{"name", "type", "bytes"[, "shape",
    "dtype"]}]}], "bytes": total}``; an array's bytes are its serialised size.
    """
    records, total = [], 0
    for name in sorted(content):
        record = content[name]
        fields = []
        if isinstance(record, ArrayRecord):
            for key, array in record.items():
                size = len(array.data)
                fields.append({"name": key, "type": "array", "bytes": size,
                               "shape": list(array.shape), "dtype": str(array.dtype)})
                total += size
        elif isinstance(record, ConfigRecord | MetricRecord):
            for key, value in record.items():
                size = _value_size(value)
                fields.append({"name": key, "type": _value_type(value), "bytes": size})
                total += size
        records.append({"name": name, "type": type(record).__name__, "fields": fields})
    return {"records": records, "bytes": total}


def _value_type(value: object) -> str:
    if isinstance(value, list):
        inner = _value_type(value[0]) if value else "empty"
        return f"list[{inner}]"
    return type(value).__name__


def _value_size(value: object) -> int:
    """Bytes a config or metric value takes (text as UTF-8, numbers as 8, bools as 1)."""
    if isinstance(value, list):
        return sum(_value_size(item) for item in value)
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    return 1 if isinstance(value, bool) else 8


@dataclass(frozen=True, slots=True)
class LedgerView:
    """The ledger as the log sees it after a request: read-only, or why it could not be read."""

    path: Path
    ledger: PrivacyLedger | None
    error: str | None

    def heads(self) -> tuple[Path, ...]:
        """The head files to anchor the log in: the ledger's, and the copy beside it."""
        return () if self.ledger is None else anchor_heads(self.ledger)

    def summary(self) -> dict[str, Any]:
        """The ledger's write number, entry count and budget (or the error)."""
        if self.ledger is None:
            return {"path": str(self.path), "error": self.error}
        return ledger_summary(self.ledger)


def read_ledger(privacy: HospitalPrivacy, name: str) -> LedgerView:
    """Open the hospital's ledger read-only, as the ClientApp checks it (never creates one)."""
    fallback = default_head_path(name) if privacy.ledger_configured else None
    try:
        ledger = PrivacyLedger.read(privacy.ledger_path, head_path=privacy.head_path,
                                    default_head_path=fallback)
    except (LedgerError, OSError) as error:
        return LedgerView(privacy.ledger_path, None, str(error))
    return LedgerView(privacy.ledger_path, ledger, None)


def _figures(entry: LedgerEntry) -> dict[str, float | None] | None:
    after = entry.after
    if after is None:
        return None
    return {"train": after.patient, "test": after.test, "hospital": after.hospital,
            "delta": after.delta}


def _charged(before: dict[str, float | None] | None,
             after: dict[str, float | None] | None) -> dict[str, float | None] | None:
    """Epsilon an entry added per track: None if a figure is missing, or the two were
    computed at different deltas (the budget was lowered in between); per track None where
    unbounded.
    """
    if before is None or after is None or before["delta"] != after["delta"]:
        return None
    out: dict[str, float | None] = {}
    for track in ("train", "test", "hospital"):
        old, new = before[track], after[track]
        out[track] = (None if old is None or new is None or not np.isfinite(new)
                      else max(0.0, new - old))
    return out


def releases(ledger: PrivacyLedger, run_id: str, server_round: int,
             logged: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ledger entries of (run, round), and entries charged since the log last looked.

    ``logged`` is the entry count the log's last record saw; None (a new log) counts the
    request's own entries at the ledger's end as charged by it. Returns ``(releases,
    unlogged)``: each release with ``charged`` "this request" or "earlier" (a secure round's
    later stages, a resend); ``unlogged`` holds entries of other requests charged since.
    """
    found, unlogged = [], []
    entries = ledger.entries
    if logged is None:
        logged = len(entries)
        while logged and (entries[logged - 1].run, entries[logged - 1].round) == (
                run_id, server_round):
            logged -= 1
    for index, entry in enumerate(entries):
        before = _figures(entries[index - 1]) if index > 0 else {
            "train": 0.0, "test": 0.0, "hospital": 0.0,
            "delta": entry.after.delta if entry.after else None}
        event = entry.event
        described = {"run": entry.run, "round": entry.round, "level": str(event.level.value),
                     "track": str(entry.track.value), "noise_multiplier": event.noise_multiplier,
                     "sample_rate": event.sample_rate, "steps": event.steps,
                     "noise_mode": None if event.noise_mode is None else str(event.noise_mode),
                     "epsilon_after": _figures(entry),
                     "epsilon_charged": _charged(before, _figures(entry))}
        new = index >= logged
        if (entry.run, entry.round) == (run_id, server_round):
            described["charged"] = "this request" if new else "earlier"
            found.append(described)
        elif new:
            unlogged.append(described)
    return found, unlogged


def _outcome(reply: Message) -> tuple[str, str | None]:
    """("answered" | "declined" | "error", the reason of a decline or an error reply)."""
    if reply.has_error():
        return "error", reply.error.reason
    return reply_outcome(reply.content)


def request_fields(msg: Message, context: Context, reply: Message,
                   view: LedgerView, logged: int | None) -> dict[str, Any]:
    """The record of one request and its reply (see the module docstring)."""
    outcome, reason = _outcome(reply)
    claim = None if reply.has_error() else reply_claim(reply.content)
    ref = claim[1] if claim is not None else request_ref(msg.content)
    stage = secagg_stage(msg.content, str(Key.STAGE))
    fields: dict[str, Any] = {
        "event": "request", "outcome": outcome, "kind": msg.metadata.message_type,
        "hospital": hospital_name(msg, context, reply),
        "flower": {"run_id": context.run_id, "message_id": msg.metadata.message_id,
                   "node_id": context.node_id, "server_node_id": msg.metadata.src_node_id},
        "fedcare": {"run_id": ref.run_id, "round": ref.server_round},
        "code_sha256": code_digest(installed_app_dir()),
        "sent": None if reply.has_error() else describe_content(reply.content),
        "ledger": view.summary()}
    if isinstance(stage, str):
        fields["stage"] = stage
    if reason is not None:
        fields["reason"] = reason
    if view.ledger is not None:
        charged_round = ledger_round_of(msg.metadata.message_type, ref.server_round)
        found, unlogged = releases(view.ledger, ref.run_id, charged_round, logged)
        fields["releases"] = found
        if unlogged:
            fields["unlogged_charges"] = unlogged
    return fields


def hospital_name(msg: Message, context: Context, reply: Message | None) -> str:
    """The hospital a reply names, else the node's own name (``node_identity``)."""
    claim = None if reply is None or reply.has_error() else reply_claim(reply.content)
    if claim is not None:
        return claim[0].name
    return node_identity(dict(context.node_config)).name


def budget_fields(view: LedgerView, last: dict[str, Any] | None,
                  cause: str) -> dict[str, Any] | None:
    """A budget record if the ledger's budget is new to the log or differs from the last one
    (a lowering with its ``cause``, ``lowering_cause``).
    """
    if view.ledger is None:
        return None
    budget = budget_of(view.ledger)
    previous = None if last is None else (last.get("ledger") or {}).get("budget")
    if previous == budget:
        return None
    fields: dict[str, Any] = {"event": "budget-recorded", "hospital": view.ledger.hospital,
                              "budget": budget, "ledger": view.summary()}
    if previous is not None:
        lowered = all(budget[key] <= previous[key] for key in
                      ("epsilon", "delta", "test_epsilon", "test_delta"))
        fields.update(event="budget-lowered" if lowered else "budget-changed",
                      previous_budget=previous,
                      cause=cause if lowered else "unknown: fedcare never raises a budget")
    return fields


def lowering_cause(privacy: HospitalPrivacy, node_config: dict[str, Any]) -> str:
    """Which settings a lowered budget came from: the ClientApp opens the ledger with the
    budget the hospital stated, which may only lower it (a key the node config does not set
    keeps the ledger's own: ``HospitalPrivacy.ledger_limits``).
    """
    applied = f"epsilon {privacy.budget_epsilon:g}, delta {privacy.budget_delta:g}"
    if not privacy.ledger_configured:
        return f"the simulation's settings for its hospitals ({applied})"
    keys = ("budget-epsilon", "budget-delta")
    given = [f"{key}={node_config[key]}" for key in keys if key in node_config]
    if not given:
        return "not this node config (it sets no budget-epsilon or budget-delta)"
    return f"the node config's {', '.join(given)}"


def log_directory_ready(view: LedgerView, privacy: HospitalPrivacy, name: str) -> bool:
    """Whether the log's directory exists or may be made (not when the ledger was deleted)."""
    directory = view.path.parent
    if directory.is_dir():
        return True
    heads = [privacy.head_path, default_head_path(name) if privacy.ledger_configured else None]
    if any(head is not None and head.is_file() for head in heads):
        return False  # the head records a ledger whose directory is gone: make nothing
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return True


def record_request(privacy_for: PrivacyProvider, msg: Message, context: Context,
                   reply: Message) -> None:
    """Append the request's record (and a budget record first, if the budget changed).

    Raises
    ------
    DisclosureLogError
        If the log cannot be appended to (the caller then sends an error reply instead).
    """
    name = hospital_name(msg, context, reply)
    try:
        privacy = privacy_for(context, HospitalData(name, _NO_ROWS, _NO_ROWS, _NO_ROWS,
                                                    _NO_ROWS))
    except ValueError as error:  # an invalid node config: the reply already says so
        logger.warning("disclosure log: no ledger location for %s: %s", name, error)
        return
    if privacy is None:
        return
    view = read_ledger(privacy, name)
    if not log_directory_ready(view, privacy, name):
        logger.warning("disclosure log: not recorded, the ledger's directory %s is gone",
                       view.path.parent)
        return
    last = last_record(log_path(view.path))
    seen = None if last is None else (last.get("ledger") or {}).get("entries")
    budget = budget_fields(view, last, lowering_cause(privacy, dict(context.node_config)))
    if budget is not None:
        append_anchored(view.path, view.heads(), budget)
    fields = request_fields(msg, context, reply, view, seen if isinstance(seen, int) else None)
    append_anchored(view.path, view.heads(), fields)


@dataclass(frozen=True, slots=True)
class DisclosureLogMod:
    """The mod recording every request and its reply in the hospital's disclosure log.

    ``privacy_for`` locates the hospital's ledger (the ClientApp's privacy provider, given a
    data stand-in that holds only the hospital's name: providers key settings by name). A
    module-level class, so that the ClientApp pickles it by reference.
    """

    privacy_for: PrivacyProvider

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        """Run the rest of the app, record the request and its reply, return the reply."""
        try:
            reply = call_next(msg, context)
        except Exception as error:
            failed = Message(Error(code=0, reason=f"{type(error).__name__}: {error}"),
                             reply_to=msg)
            _record_or_refuse(self.privacy_for, msg, context, failed)
            raise
        return _record_or_refuse(self.privacy_for, msg, context, reply)


def disclosure_log_mod(privacy_for: PrivacyProvider) -> Mod:
    """The disclosure-log mod for a ClientApp whose privacy provider is ``privacy_for``."""
    return DisclosureLogMod(privacy_for)


def _record_or_refuse(privacy_for: PrivacyProvider, msg: Message, context: Context,
                      reply: Message) -> Message:
    """``reply`` once recorded; an error reply (nothing leaves) if it cannot be recorded."""
    try:
        record_request(privacy_for, msg, context, reply)
    except DisclosureLogError as error:
        logger.error("refusing to send a reply that cannot be recorded: %s", error)
        return Message(Error(code=LOG_WRITE_FAILED,
                             reason=f"the hospital's disclosure log cannot be written, so "
                                    f"nothing is sent: {error}"), reply_to=msg)
    return reply
