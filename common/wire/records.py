"""The only pack and unpack functions of fedcare's messages (Flower's RecordDict <-> dataclasses).

Server -> hospital: the global weights (``arrays``), the round settings (``config``) and, under
secure aggregation, a stage request (``secagg``, ``secagg-next``). Hospital -> server: a reply
header (``reply``: kind, identity and, optionally, its proof, the request it answers, a
decline's reason) and the parts the manifest allows (``arrays``, ``privacy``, ``metrics``,
``statistics``, ``secagg``, ``secagg-next``). Unpacking validates every field and raises
``WireFormatError`` naming it; a record or key that the format does not define is refused too.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.app.typing import MetricRecordValues

from common.identity_proof import PROOF_BYTES
from common.wire.fields import (
    MAX_TEXT,
    WireFormatError,
    read_bool,
    read_enum,
    read_float,
    read_int,
    read_text,
    write_float,
)
from common.wire.replies import (
    DeclinedReply,
    EvaluateReply,
    ExplainReply,
    HospitalIdentity,
    NDArrays,
    PrivacyReport,
    Reply,
    ReplyKind,
    RoundRef,
    SecAggPayload,
    SecAggStageReply,
    TrainReply,
)
from common.wire.settings import (
    MAX_HOSPITALS,
    MAX_ROUNDS,
    NAME_PATTERN,
    RUN_ID_PATTERN,
    RoundSettings,
    settings_from_fields,
    settings_to_fields,
)
from common.wire.statistics import StatisticsSpec, validate_statistics

ARRAYS, CONFIG, SECAGG, SECAGG_NEXT = "arrays", "config", "secagg", "secagg-next"
REPLY, PRIVACY, METRICS, STATISTICS = "reply", "privacy", "metrics", "statistics"
EXPLANATION = "explanation"  # an ExplainReply's release: one float64 vector "attributions"
MAX_EXPLANATION_CELLS = 100_001  # features + 1; far above any task's width
IDENTITY_PROOF = "identity-proof"  # optional, in the reply header (common.identity_proof)
MAX_EXAMPLES_ON_WIRE = 10**12  # a type bound only; the run's max-examples is the real one
_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


@dataclass(frozen=True, slots=True)
class Request:
    """A message from the server, unpacked: what the hospital is asked to do."""

    settings: RoundSettings | None
    weights: NDArrays | None
    secagg: SecAggPayload | None = None
    secagg_next: SecAggPayload | None = None


def pack_request(settings: RoundSettings | None, weights: NDArrays | None, *,
                 secagg: SecAggPayload | None = None,
                 secagg_next: SecAggPayload | None = None) -> RecordDict:
    """Pack a server -> hospital message's content."""
    content = RecordDict()
    if weights is not None:
        content[ARRAYS] = ArrayRecord(weights)
    if settings is not None:
        content[CONFIG] = ConfigRecord(settings_to_fields(settings))  # type: ignore[arg-type]
    if secagg is not None:
        content[SECAGG] = ConfigRecord(secagg)  # type: ignore[arg-type]
    if secagg_next is not None:
        content[SECAGG_NEXT] = ConfigRecord(secagg_next)  # type: ignore[arg-type]
    return content


def unpack_request(content: RecordDict) -> Request:
    """Unpack a server message; raise WireFormatError naming the first bad field."""
    _only(content, {ARRAYS, CONFIG, SECAGG, SECAGG_NEXT}, "request")
    settings = settings_from_fields(_config(content, CONFIG)) if CONFIG in content else None
    return Request(settings=settings,
                   weights=_arrays(content, ARRAYS) if ARRAYS in content else None,
                   secagg=_payload(content, SECAGG), secagg_next=_payload(content, SECAGG_NEXT))


def request_ref(content: RecordDict) -> RoundRef:
    """The run id and round a (possibly malformed) request names, as far as they are readable.

    A hospital declining a malformed request echoes them, so the server files the decline
    under the right round; unreadable parts become ``unknown`` and round 1.
    """
    config = content.get(CONFIG)
    raw = dict(config) if isinstance(config, ConfigRecord) else {}
    try:
        run_id = read_text(raw, "run-id", pattern=RUN_ID_PATTERN)
    except WireFormatError:
        run_id = "unknown"
    try:
        server_round = read_int(raw, "server-round", minimum=1, maximum=MAX_ROUNDS)
    except WireFormatError:
        server_round = 1
    return RoundRef(run_id, server_round)


def node_identity(node_config: Mapping[str, object]) -> HospitalIdentity:
    """The identity a node states when it cannot derive one from the round's task.

    Its ``hospital-name`` (else ``hospital-<partition-id>``) and partition id (0 if unreadable);
    the server accepts it only if it matches what it bound to the node.
    """
    try:
        index = read_int(node_config, "partition-id", minimum=0, maximum=MAX_HOSPITALS - 1)
    except WireFormatError:
        index = 0
    name = node_config.get("hospital-name")
    return HospitalIdentity(name if isinstance(name, str) and name else f"hospital-{index}",
                            index)


def pack_reply(reply: Reply) -> RecordDict:
    """Pack a hospital's reply (the manifest is checked by the caller, ``client.replies``)."""
    header: dict[str, Any] = {"kind": _kind(reply).value, "name": reply.hospital.name,
                              "index": reply.hospital.index, "run-id": reply.answers.run_id,
                              "server-round": reply.answers.server_round}
    if reply.hospital.proof is not None:
        header[IDENTITY_PROOF] = bytes(reply.hospital.proof)
    content = RecordDict()
    if isinstance(reply, DeclinedReply):
        header["reason"] = reply.reason[:MAX_TEXT]
    content[REPLY] = ConfigRecord(header)
    if not isinstance(reply, SecAggStageReply) and reply.privacy is not None:
        content[PRIVACY] = _pack_privacy(reply.privacy)
    if isinstance(reply, ExplainReply):
        content[EXPLANATION] = ArrayRecord(
            {"attributions": Array(np.asarray(reply.attributions, dtype=np.float64))})
    if isinstance(reply, TrainReply):
        if reply.update is not None:
            content[ARRAYS] = ArrayRecord(reply.update)
        metrics: dict[str, MetricRecordValues] = {}
        if reply.num_examples is not None:
            metrics["num-examples"] = int(reply.num_examples)
        if reply.train_loss is not None:
            metrics["train-loss"] = float(reply.train_loss)
        if reply.encoding_clipped is not None:
            metrics["encoding-clipped"] = int(reply.encoding_clipped)
        if metrics:
            content[METRICS] = MetricRecord(metrics)
    statistics = None if isinstance(reply, SecAggStageReply | ExplainReply) else reply.statistics
    if statistics is not None:
        content[STATISTICS] = pack_statistics(statistics)
    if isinstance(reply, TrainReply | SecAggStageReply) and reply.secagg is not None:
        content[SECAGG] = ConfigRecord(reply.secagg)  # type: ignore[arg-type]
    if isinstance(reply, SecAggStageReply) and reply.secagg_next is not None:
        content[SECAGG_NEXT] = ConfigRecord(reply.secagg_next)  # type: ignore[arg-type]
    return content


def unpack_reply(content: RecordDict, *, statistics: StatisticsSpec) -> Reply:
    """Unpack and validate a hospital's reply.

    Raises
    ------
    WireFormatError
        Naming the first missing, unknown, mistyped or out-of-range field.
    """
    header = _config(content, REPLY)
    kind = read_enum(header, "kind", ReplyKind)
    allowed_keys = {"kind", "name", "index", "run-id", "server-round", IDENTITY_PROOF} | (
        {"reason"} if kind == ReplyKind.DECLINED else set())
    _only(header, allowed_keys, REPLY)
    hospital = HospitalIdentity(
        name=read_text(header, "name", pattern=NAME_PATTERN, max_length=64),
        index=read_int(header, "index", minimum=0, maximum=MAX_HOSPITALS - 1),
        proof=_identity_proof(header))
    answers = RoundRef(run_id=read_text(header, "run-id", pattern=RUN_ID_PATTERN),
                       server_round=read_int(header, "server-round", minimum=1,
                                             maximum=MAX_ROUNDS))
    records = {ReplyKind.TRAIN: {REPLY, ARRAYS, PRIVACY, METRICS, STATISTICS, SECAGG},
               ReplyKind.DECLINED: {REPLY, PRIVACY, STATISTICS},
               ReplyKind.EVALUATE: {REPLY, STATISTICS, PRIVACY},
               ReplyKind.SECAGG: {REPLY, SECAGG, SECAGG_NEXT},
               ReplyKind.EXPLAIN: {REPLY, EXPLANATION, PRIVACY}}[kind]
    _only(content, records, "reply")
    if kind == ReplyKind.EXPLAIN:
        return ExplainReply(hospital, answers, _explanation(content),
                            _privacy(content) if PRIVACY in content else None)
    stats = (validate_statistics(unpack_statistics(content, statistics), statistics)
             if STATISTICS in content else None)
    if kind == ReplyKind.EVALUATE:
        if stats is None:
            raise WireFormatError(STATISTICS, "missing")
        return EvaluateReply(hospital, answers, stats,
                             _privacy(content) if PRIVACY in content else None)
    if kind == ReplyKind.SECAGG:
        payload = _payload(content, SECAGG)
        if payload is None:
            raise WireFormatError(SECAGG, "missing")
        return SecAggStageReply(hospital, answers, payload, _payload(content, SECAGG_NEXT))
    privacy = _privacy(content) if PRIVACY in content else None
    if kind == ReplyKind.DECLINED:
        reason = read_text(header, "reason")
        return DeclinedReply(hospital, answers, reason, privacy, stats)
    metrics = _metrics(content)
    _only(metrics, {"num-examples", "train-loss", "encoding-clipped"}, METRICS)
    return TrainReply(
        hospital, answers,
        update=_arrays(content, ARRAYS) if ARRAYS in content else None,
        privacy=privacy,
        num_examples=(read_int(metrics, "num-examples", minimum=1, maximum=MAX_EXAMPLES_ON_WIRE)
                      if "num-examples" in metrics else None),
        train_loss=(read_float(metrics, "train-loss", minimum=0)
                    if "train-loss" in metrics else None),
        encoding_clipped=(read_int(metrics, "encoding-clipped", minimum=0)
                          if "encoding-clipped" in metrics else None),
        statistics=stats, secagg=_payload(content, SECAGG))


def reply_claim(content: RecordDict) -> tuple[HospitalIdentity, RoundRef] | None:
    """The identity and the request a packed reply states (None: its header is unreadable).

    A hospital signs what its reply claims (``client.identity_proof``); what the server then
    accepts is decided by ``unpack_reply`` and the server's identity book, never by this.
    """
    if REPLY not in content or not isinstance(content[REPLY], ConfigRecord):
        return None
    header = dict(content[REPLY])
    try:
        return (HospitalIdentity(read_text(header, "name", pattern=NAME_PATTERN, max_length=64),
                                 read_int(header, "index", minimum=0,
                                          maximum=MAX_HOSPITALS - 1)),
                RoundRef(read_text(header, "run-id", pattern=RUN_ID_PATTERN),
                         read_int(header, "server-round", minimum=1, maximum=MAX_ROUNDS)))
    except WireFormatError:
        return None


def attach_identity_proof(content: RecordDict, proof: bytes) -> None:
    """Put `proof` (``PROOF_BYTES``) into a packed reply's header, in place.

    Raises
    ------
    WireFormatError
        If the content has no reply header or the proof has the wrong length.
    """
    if len(proof) != PROOF_BYTES:
        raise WireFormatError(IDENTITY_PROOF, f"must be {PROOF_BYTES} bytes, got {len(proof)}")
    header = _record(content, REPLY, ConfigRecord)
    header[IDENTITY_PROOF] = proof


def pack_statistics(statistics: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Evaluation statistics as one float64 vector, in the sorted order of their names (one
    array to serialise instead of one per statistic).
    """
    names = sorted(statistics)
    flat = np.concatenate([np.asarray(statistics[n], dtype=np.float64).ravel() for n in names])
    return ArrayRecord({"sums": Array(flat)})


def unpack_statistics(content: RecordDict, spec: StatisticsSpec) -> dict[str, np.ndarray]:
    """Split the statistics vector into the task's named statistics (validated by the caller).

    Raises
    ------
    WireFormatError
        If the record is not one vector of exactly the task's statistics' size.
    """
    arrays = _array_dict(content, STATISTICS)
    if set(arrays) != {"sums"}:
        raise WireFormatError(STATISTICS, f"must hold one vector 'sums', got {sorted(arrays)}")
    flat = arrays["sums"]
    shapes = spec.shapes
    size = sum(int(np.prod(shape)) for shape in shapes.values())
    if flat.ndim != 1 or flat.size != size:
        raise WireFormatError(STATISTICS, f"has shape {flat.shape}, expected ({size},): "
                              f"the statistics {sorted(shapes)}")
    out, start = {}, 0
    for name in sorted(shapes):
        count = int(np.prod(shapes[name]))
        out[name] = flat[start:start + count].reshape(shapes[name])
        start += count
    return out


def _explanation(content: RecordDict) -> np.ndarray:
    """The explanation release: one finite float vector of 2 to MAX_EXPLANATION_CELLS cells."""
    arrays = _array_dict(content, EXPLANATION)
    if set(arrays) != {"attributions"}:
        raise WireFormatError(EXPLANATION, f"must hold one vector 'attributions', got "
                              f"{sorted(arrays)}")
    vector = arrays["attributions"]
    if (vector.dtype not in _FLOAT_DTYPES or vector.ndim != 1
            or not 2 <= vector.size <= MAX_EXPLANATION_CELLS):
        raise WireFormatError(f"{EXPLANATION}.attributions", f"must be a float vector of 2 to "
                              f"{MAX_EXPLANATION_CELLS} cells, got {vector.dtype} "
                              f"{vector.shape}")
    if not np.isfinite(vector).all():
        raise WireFormatError(f"{EXPLANATION}.attributions", "holds a non-finite value")
    return np.asarray(vector, dtype=np.float64)


def _kind(reply: Reply) -> ReplyKind:
    if isinstance(reply, ExplainReply):
        return ReplyKind.EXPLAIN
    if isinstance(reply, TrainReply):
        return ReplyKind.TRAIN
    if isinstance(reply, DeclinedReply):
        return ReplyKind.DECLINED
    if isinstance(reply, EvaluateReply):
        return ReplyKind.EVALUATE
    return ReplyKind.SECAGG


def _only(mapping: Mapping[str, object], allowed: set[str], where: str) -> None:
    extra = sorted(set(mapping) - allowed)
    if extra:
        raise WireFormatError(f"{where}.{extra[0]}", "is not part of this message")


def _record(content: RecordDict, name: str, kind: type) -> Any:
    if name not in content:
        raise WireFormatError(name, "missing")
    record = content[name]
    if not isinstance(record, kind):
        raise WireFormatError(name, f"must be a {kind.__name__}, got {type(record).__name__}")
    return record


def _config(content: RecordDict, name: str) -> dict[str, object]:
    return dict(_record(content, name, ConfigRecord))


def _metrics(content: RecordDict) -> dict[str, object]:
    return dict(_record(content, METRICS, MetricRecord)) if METRICS in content else {}


def _payload(content: RecordDict, name: str) -> SecAggPayload | None:
    return _config(content, name) if name in content else None


def _array_dict(content: RecordDict, name: str) -> dict[str, np.ndarray]:
    record = _record(content, name, ArrayRecord)
    out = {}
    for key, array in record.items():
        try:
            out[key] = array.numpy()
        except Exception as error:  # a malformed Array fails in numpy's deserialisation
            raise WireFormatError(f"{name}.{key}", f"is not a numpy array ({error})") from None
    return out


def _arrays(content: RecordDict, name: str) -> NDArrays:
    arrays = list(_array_dict(content, name).values())
    for position, array in enumerate(arrays):
        if array.dtype not in _FLOAT_DTYPES:
            raise WireFormatError(f"{name}[{position}]", f"has dtype {array.dtype}, expected "
                                  "a float type")
    return arrays


def _identity_proof(header: Mapping[str, object]) -> bytes | None:
    """The header's identity proof: absent, or exactly ``PROOF_BYTES`` bytes."""
    if IDENTITY_PROOF not in header:
        return None
    proof = header[IDENTITY_PROOF]
    if not isinstance(proof, bytes):
        raise WireFormatError(f"{REPLY}.{IDENTITY_PROOF}",
                              f"must be bytes, got {type(proof).__name__}")
    if len(proof) != PROOF_BYTES:
        raise WireFormatError(f"{REPLY}.{IDENTITY_PROOF}",
                              f"must be {PROOF_BYTES} bytes, got {len(proof)}")
    return proof


_PRIVACY_KEYS = {"epsilon-patient", "epsilon-hospital", "budget-epsilon", "budget-delta",
                 "epsilon-test", "test-budget-epsilon", "test-budget-delta", "epsilon-total",
                 "parallel"}


def _pack_privacy(p: PrivacyReport) -> ConfigRecord:
    return ConfigRecord({
        "epsilon-patient": write_float(p.epsilon_patient),
        "epsilon-hospital": write_float(p.epsilon_hospital),
        "budget-epsilon": write_float(p.budget_epsilon),
        "budget-delta": float(p.budget_delta),
        "epsilon-test": write_float(p.epsilon_test),
        "test-budget-epsilon": write_float(p.test_budget_epsilon),
        "test-budget-delta": float(p.test_budget_delta),
        "epsilon-total": write_float(p.epsilon_total),
        "parallel": bool(p.parallel)})


def _privacy(content: RecordDict) -> PrivacyReport:
    raw = _config(content, PRIVACY)
    _only(raw, _PRIVACY_KEYS, PRIVACY)

    def epsilon(key: str) -> float:
        return read_float(raw, key, minimum=0, allow_unbounded=True)

    return PrivacyReport(
        epsilon_patient=epsilon("epsilon-patient"),
        epsilon_hospital=epsilon("epsilon-hospital"),
        budget_epsilon=read_float(raw, "budget-epsilon", minimum=0, strict_minimum=True,
                                  allow_unbounded=True),
        budget_delta=read_float(raw, "budget-delta", minimum=0, maximum=1),
        epsilon_test=epsilon("epsilon-test"),
        test_budget_epsilon=read_float(raw, "test-budget-epsilon", minimum=0,
                                       strict_minimum=True, allow_unbounded=True),
        test_budget_delta=read_float(raw, "test-budget-delta", minimum=0, maximum=1),
        epsilon_total=epsilon("epsilon-total"),
        parallel=read_bool(raw, "parallel"))


def reply_outcome(content: RecordDict) -> tuple[str, str | None]:
    """("declined", its reason) for a decline's reply header, else ("answered", None)."""
    header = content.get(REPLY, None)
    if isinstance(header, ConfigRecord) and header.get("kind") == "declined":
        return "declined", str(header.get("reason", ""))
    return "answered", None


def secagg_stage(content: RecordDict, stage_key: str) -> str | None:
    """The secure-aggregation stage a request names under `stage_key`, or None."""
    record = content.get(SECAGG, None)
    if isinstance(record, ConfigRecord):
        stage = record.get(stage_key)
        return None if stage is None else str(stage)
    return None
