"""The null client replies like a hospital that does no work: a zero update, fixed statistics."""

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

import simulations.null_client as null_client
from common import record_keys as keys
from server.validation import update_problem

WEIGHTS = [np.full((13, 1), 3.0, dtype=np.float32), np.full(1, -2.0, dtype=np.float32),
           np.arange(4, dtype=np.float64)]


def _message(kind: str, dp_mode: str = "none") -> tuple[Message, Context]:
    content = RecordDict({keys.ARRAYS: ArrayRecord(WEIGHTS), keys.CONFIG: ConfigRecord(
        {keys.TASK: "heart-disease", keys.HOSPITALS: 4, keys.DP_MODE: dp_mode})})
    msg = Message(content=content, metadata=Metadata(
        run_id=1, message_id="m1", src_node_id=1, dst_node_id=7, reply_to_message_id="",
        group_id="1", created_at=time.time(), ttl=60.0, message_type=kind))
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 2}, state=RecordDict(),
                      run_config={})
    return msg, context


def test_facts_file_gives_the_same_reply_as_computing(tmp_path, monkeypatch):
    computed = null_client.evaluate(*_message("evaluate"))
    facts = null_client.write_facts(tmp_path, "heart-disease", 4)
    monkeypatch.setattr(null_client, "FACTS_FILE", facts)
    stored = null_client.evaluate(*_message("evaluate"))
    assert dict(stored.content[keys.HOSPITAL]) == {keys.HOSPITAL_NAME: "switzerland",
                                                   keys.HOSPITAL_INDEX: 2}
    assert dict(computed.content[keys.HOSPITAL]) == dict(stored.content[keys.HOSPITAL])
    a, b = computed.content[keys.STATISTICS], stored.content[keys.STATISTICS]
    assert set(a.keys()) == set(b.keys()) and "score_hist" in a
    for key in a.keys():
        left, right = a[key].numpy(), b[key].numpy()
        assert left.dtype == right.dtype and left.shape == right.shape
        np.testing.assert_array_equal(left, right)


@pytest.mark.parametrize("dp_mode", ["none", "patient", "hospital"])
def test_train_reply_is_a_zero_update_that_passes_the_norm_check(dp_mode):
    reply = null_client.train(*_message("train", dp_mode))
    update = reply.content[keys.ARRAYS].to_numpy_ndarrays()
    assert [(u.shape, u.dtype) for u in update] == [(w.shape, w.dtype) for w in WEIGHTS]
    assert all(not u.any() for u in update)
    # The server adds the mean update to its model: a zero update leaves it where it was.
    assert all(np.array_equal(w + u, w) for w, u in zip(WEIGHTS, update, strict=True))
    assert update_problem(update, WEIGHTS, max_norm=1e-9) is None
    metrics = dict(reply.content[keys.METRICS])
    assert metrics[keys.EPSILON_PATIENT] == metrics[keys.EPSILON_HOSPITAL] == 0.0
    assert (keys.NUM_EXAMPLES in metrics) == (dp_mode == "none")
    assert (keys.TRAIN_LOSS in metrics) == (dp_mode == "none")
    assert dict(reply.content[keys.HOSPITAL]) == {keys.HOSPITAL_NAME: "switzerland",
                                                  keys.HOSPITAL_INDEX: 2}


@pytest.mark.slow
def test_null_model_stays_the_initial_model_under_patient_dp(tmp_path):
    # Before: the global weights came back as the update, the model doubled every round and
    # patient-level DP's norm check rejected every hospital in round 3.
    script = textwrap.dedent(f"""
        from pathlib import Path
        from common.config import RunConfig
        from simulations.null_client import app
        from simulations.simulate import simulate
        config = RunConfig.from_run_config({{"task": "heart-disease", "num-server-rounds": 4,
                                            "dp.mode": "patient"}})
        simulate(config, Path({str(tmp_path)!r}), client_app=app)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=600)
    import keras

    from common.models import build_model
    from common.tasks import get_task

    rows = (tmp_path / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4
    final = keras.saving.load_model(tmp_path / "model.keras").get_weights()
    initial = build_model(get_task("heart-disease"), seed=0).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(final, initial, strict=True))
