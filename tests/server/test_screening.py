"""The server's boundary: every reply field fuzzed, impostors, replays, bounds from the run."""

import math

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from common.metrics import evaluation_statistics
from common.wire.modes import DpMode, NoiseMode
from common.wire.records import pack_reply
from common.wire.replies import (
    DeclinedReply,
    EvaluateReply,
    HospitalIdentity,
    PrivacyReport,
    RoundRef,
    SecAggStageReply,
    TrainReply,
)
from common.wire.statistics import StatisticsSpec
from server.identity import IdentityBook
from server.screening import ReplyRules, screen_replies
from tests.wire_messages import request_message

HOSPITALS = ["cleveland", "hungary", "switzerland", "va"]
WEIGHTS = [np.zeros((3, 1), np.float32), np.zeros(1, np.float32)]
SPEC = StatisticsSpec("binary", 1)
RUN, ROUND = "run1", 3


def _rules(dp_mode=DpMode.NONE, *, secure=False, norm_bound=None, max_examples=1000):
    return ReplyRules(run_id=RUN, server_round=ROUND, dp_mode=dp_mode,
                      noise_mode=NoiseMode.LOCAL, secure=secure, statistics=SPEC,
                      global_weights=WEIGHTS, norm_bound=norm_bound, max_examples=max_examples)


def _stats():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20)
    return evaluation_statistics("binary", y, rng.random(20))


def _identity(index):
    return HospitalIdentity(HOSPITALS[index], index)


THIS_ROUND = RoundRef(RUN, ROUND)


def _train(index=0, *, scale=0.1, examples=10, answers=THIS_ROUND, **parts):
    """A train reply: non-DP (example count, loss) unless `examples` is None (DP: privacy)."""
    return TrainReply(_identity(index), answers,
                      update=[np.full(w.shape, scale, np.float32) for w in WEIGHTS],
                      num_examples=examples, train_loss=0.5 if examples else None, **parts)


def _msg(reply_or_content, node):
    content = (reply_or_content if not hasattr(reply_or_content, "hospital")
               else pack_reply(reply_or_content))
    return request_message(None, None, content=content, src_node_id=node, dst_node_id=0)


def _screen(messages, rules=None, book=None, kinds=(TrainReply, DeclinedReply)):
    book = book or IdentityBook(hospitals=list(HOSPITALS))
    return screen_replies(messages, rules or _rules(), book, kinds), book


def test_valid_replies_of_every_kind_are_accepted():
    replies = [
        _train(0),
        DeclinedReply(_identity(1), RoundRef(RUN, ROUND), "budget spent"),
    ]
    screened, book = _screen([_msg(r, 10 + i) for i, r in enumerate(replies)])
    assert set(screened.replies) == {"cleveland", "hungary"} and not screened.rejected
    assert screened.declined == {"hungary": "budget spent"}
    evaluation, _ = _screen([_msg(EvaluateReply(_identity(0), RoundRef(RUN, ROUND), _stats()), 10)],
                            book=book, kinds=(EvaluateReply,))
    assert set(evaluation.statistics) == {"cleveland"}
    stage, _ = _screen([_msg(SecAggStageReply(_identity(0), RoundRef(RUN, ROUND), {"k": 1}), 10)],
                       book=book, kinds=(SecAggStageReply,))
    assert set(stage.replies) == {"cleveland"}


# Fuzzing: each part and field of a valid train reply replaced by a bad value.
BAD_VALUES = ["text", math.nan, math.inf, -math.inf, -1, -1e30, 1e300, 2**70, True, b"\x00", None]
HEADER_FIELDS = ["kind", "name", "index", "run-id", "server-round"]
PRIVACY_FIELDS = ["epsilon-patient", "epsilon-hospital", "budget-epsilon", "budget-delta"]
METRIC_FIELDS = ["num-examples", "train-loss"]


def _private_train():
    return _train(examples=None, privacy=PrivacyReport(0.5, 0.2, 1.0, 1e-5), statistics=_stats())


def _mutated(record_name, field, value):
    """A valid reply's content with one field set to `value` (None: the field removed)."""
    reply = _private_train() if record_name == "privacy" else _train(statistics=_stats())
    content = pack_reply(reply)
    if record_name == "metrics" and value is not None and not isinstance(value, int | float):
        content[record_name] = ConfigRecord({**dict(content[record_name]), field: value})
        return content
    record = dict(content[record_name])
    if value is None:
        del record[field]
    else:
        record[field] = value
    kind = MetricRecord if record_name == "metrics" else ConfigRecord
    try:
        content[record_name] = kind(record)
    except (TypeError, ValueError):
        content[record_name] = ConfigRecord({k: v for k, v in record.items()
                                             if isinstance(v, int | float | str | bytes)})
    return content


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([("reply", f) for f in HEADER_FIELDS]
                       + [("privacy", f) for f in PRIVACY_FIELDS]
                       + [("metrics", f) for f in METRIC_FIELDS]),
       st.sampled_from(BAD_VALUES))
def test_every_bad_field_is_rejected_naming_it_and_never_raises(where, value):
    record_name, field = where
    rules = _rules(DpMode.PATIENT) if record_name == "privacy" else _rules()
    content = _mutated(record_name, field, value)
    screened, _ = _screen([_msg(content, 11)], rules=rules)
    if not screened.rejected:
        # Only values that are valid for the field may pass (e.g. a huge epsilon is a number).
        accepted = screened.replies.get("cleveland")
        assert accepted is not None
        return
    (who, reason), = screened.rejected.items()
    assert field in reason or f"{record_name}:" in reason or "identity" in reason, reason
    assert not screened.replies


@pytest.mark.parametrize("statistic", ["count", "loss_sum", "correct", "score_hist"])
@pytest.mark.parametrize("bad", ["missing", "nan", "negative", "shape"])
def test_bad_evaluation_statistics_are_rejected_naming_the_statistic(statistic, bad):
    from common.wire.records import pack_statistics

    stats = _stats()
    if bad == "missing":
        del stats[statistic]
    elif bad == "nan":
        stats[statistic] = stats[statistic] * np.nan
    elif bad == "negative":
        stats[statistic] = -np.abs(stats[statistic]) - 1
    else:
        stats[statistic] = np.zeros((2, 2))
    content = pack_reply(EvaluateReply(_identity(0), RoundRef(RUN, ROUND), _stats()))
    content["statistics"] = pack_statistics(stats)
    screened, _ = _screen([_msg(content, 10)], kinds=(EvaluateReply,))
    (reason,) = screened.rejected.values()
    # A missing or reshaped statistic changes the vector's size: refused for its shape.
    assert statistic in reason or (bad in ("missing", "shape") and "expected (" in reason)


@pytest.mark.parametrize("bad", ["nan", "inf", "wrong-shape", "int-dtype", "one-array-missing",
                                 "strings"])
def test_bad_update_arrays_are_rejected(bad):
    update = [np.full(w.shape, 0.1, np.float32) for w in WEIGHTS]
    if bad == "nan":
        update[0][0] = np.nan
    elif bad == "inf":
        update[1][0] = np.inf
    elif bad == "wrong-shape":
        update[0] = np.zeros((1, 3), np.float32)
    elif bad == "int-dtype":
        update[0] = np.zeros((3, 1), np.int64)
    elif bad == "one-array-missing":
        update = update[:1]
    else:
        update[0] = np.array(["a", "b", "c"]).reshape(3, 1)
    content = pack_reply(_train())
    content["arrays"] = ArrayRecord(update)
    screened, _ = _screen([_msg(content, 10)])
    assert "cleveland" not in screened.replies and len(screened.rejected) == 1


def test_a_part_the_mode_forbids_is_rejected():
    # A patient-level run: a training loss or an example count would leak un-noised data.
    reply = _train(privacy=PrivacyReport(0.5, math.inf, 1.0, 1e-5))
    screened, _ = _screen([_msg(reply, 10)], rules=_rules(DpMode.PATIENT))
    assert "cleveland" not in screened.replies
    (reason,) = screened.rejected.values()
    assert "may not leave a hospital" in reason and "num_examples" in reason


def test_a_claimed_noise_level_cannot_widen_the_bound():
    # The bound is the run's; a reply stating a noise stddev is refused as a foreign field,
    # and an update 1000x the clip is refused whatever the reply says.
    content = pack_reply(_train(scale=1000.0, examples=None,
                                privacy=PrivacyReport(0.5, 0.5, 1.0, 1e-5)))
    content["metrics"] = MetricRecord({"noise-stddev": 1e9})
    screened, _ = _screen([_msg(content, 10)], rules=_rules(DpMode.HOSPITAL, norm_bound=5.0))
    assert "noise-stddev" in screened.rejected["node 10"]
    big = _train(scale=1000.0, examples=None, privacy=PrivacyReport(0.5, 0.5, 1.0, 1e-5))
    screened, _ = _screen([_msg(big, 10)], rules=_rules(DpMode.HOSPITAL, norm_bound=5.0))
    assert "exceeds the clip bound" in screened.rejected["cleveland"]


def test_a_replayed_reply_from_an_earlier_round_is_rejected():
    old = _train(answers=RoundRef(RUN, ROUND - 1))
    other_run = _train(answers=RoundRef("another", ROUND))
    screened, _ = _screen([_msg(old, 10), _msg(other_run, 11)])
    assert not screened.replies
    assert all("replayed or stale" in why for why in screened.rejected.values())


def test_an_impostor_after_binding_is_rejected_and_the_honest_hospital_used():
    book = IdentityBook(hospitals=list(HOSPITALS))
    _screen([_msg(_train(0), 10), _msg(_train(1), 11)], book=book)  # round 1 binds 10, 11
    impostor = _train(0, scale=0.3)  # node 11 now claims to be cleveland
    screened, _ = _screen([_msg(_train(0), 10), _msg(impostor, 11)], book=book)
    assert set(screened.replies) == {"cleveland"} and screened.nodes["cleveland"] == 10
    assert "node 11" in screened.rejected and "hungary" in screened.rejected["node 11"]
    np.testing.assert_allclose(screened.replies["cleveland"].update[0], 0.1)


def test_two_nodes_claiming_one_identity_before_binding_are_both_rejected():
    screened, book = _screen([_msg(_train(0), 10), _msg(_train(0), 11)])
    assert not screened.replies
    assert set(screened.rejected) == {"node 10", "node 11"}
    assert all("[10, 11]" in why for why in screened.rejected.values())
    assert not book.bound


def test_registered_name_decides_the_identity_in_deployment():
    book = IdentityBook(hospitals=list(HOSPITALS), registered={10: "hungary"})
    screened, _ = _screen([_msg(_train(0), 10)], book=book)
    assert "is 'hungary' but its reply claims 'cleveland'" in screened.rejected["node 10"]


def test_example_counts_are_bounded_and_fixed_at_first_contact():
    book = IdentityBook(hospitals=list(HOSPITALS))
    screened, _ = _screen([_msg(_train(0, examples=10**12), 10)], book=book)
    assert "max-examples" in screened.rejected["cleveland"]
    screened, _ = _screen([_msg(_train(0, examples=50), 10)], book=book)
    assert "cleveland" in screened.replies
    screened, _ = _screen([_msg(_train(0, examples=900), 10)], book=book)
    assert "but 50 at its first reply" in screened.rejected["cleveland"]


def test_an_error_reply_is_counted_as_failed():
    from flwr.app import Error, Message

    error = Message(Error(code=1, reason="boom"), reply_to=request_message(None, None,
                    content=pack_reply(_train()), src_node_id=0, dst_node_id=10))
    screened, _ = _screen([error])
    assert screened.failed and "boom" in screened.failed[0]
