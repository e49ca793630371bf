"""The null client replies like a hospital that does no work: a zero update, fixed statistics."""

import math
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from flwr.app import Context, Message, Metadata, RecordDict

import benchmarks.null_client as null_client
from common.config import RunConfig
from common.tasks import get_task
from common.wire.records import pack_request, unpack_reply
from server.federation import round_settings, statistics_spec
from server.validation import update_problem

WEIGHTS = [np.full((13, 1), 3.0, dtype=np.float32), np.full(1, -2.0, dtype=np.float32),
           np.arange(4, dtype=np.float64)]
SPEC = statistics_spec(get_task("heart-disease"))


def _message(kind: str, dp_mode: str = "none") -> tuple[Message, Context]:
    config = RunConfig.from_run_config({"task": "heart-disease", "hospitals": 4,
                                        "dp.mode": dp_mode})
    content = pack_request(round_settings(config, "a" * 32, 3), WEIGHTS)
    msg = Message(content=content, metadata=Metadata(
        run_id=1, message_id="m1", src_node_id=1, dst_node_id=7, reply_to_message_id="",
        group_id="1", created_at=time.time(), ttl=60.0, message_type=kind))
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 2}, state=RecordDict(),
                      run_config={})
    return msg, context


def test_facts_file_gives_the_same_reply_as_computing(tmp_path, monkeypatch):
    computed = unpack_reply(null_client.evaluate(*_message("evaluate")).content, statistics=SPEC)
    facts = null_client.write_facts(tmp_path, "heart-disease", 4)
    monkeypatch.setattr(null_client, "FACTS_FILE", facts)
    stored = unpack_reply(null_client.evaluate(*_message("evaluate")).content, statistics=SPEC)
    assert (stored.hospital.name, stored.hospital.index) == ("switzerland", 2)
    assert computed.hospital == stored.hospital
    assert (stored.answers.run_id, stored.answers.server_round) == ("a" * 32, 3)
    a, b = computed.statistics, stored.statistics
    assert set(a) == set(b) and "score_hist" in a
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("dp_mode", ["none", "patient", "hospital"])
def test_train_reply_is_a_zero_update_that_passes_the_norm_check(dp_mode):
    reply = unpack_reply(null_client.train(*_message("train", dp_mode)).content, statistics=SPEC)
    update = reply.update
    assert [(u.shape, u.dtype) for u in update] == [(w.shape, w.dtype) for w in WEIGHTS]
    assert all(not u.any() for u in update)
    # The server adds the mean update to its model: a zero update leaves it where it was.
    assert all(np.array_equal(w + u, w) for w, u in zip(WEIGHTS, update, strict=True))
    assert update_problem(update, WEIGHTS, max_norm=1e-9) is None
    private = dp_mode != "none"
    assert (reply.privacy is not None) == private
    if private:
        assert reply.privacy.epsilon_patient == reply.privacy.epsilon_hospital == 0.0
        assert math.isinf(reply.privacy.budget_epsilon)
    assert (reply.num_examples is None) == private and (reply.train_loss is None) == private
    assert (reply.hospital.name, reply.hospital.index) == ("switzerland", 2)
    assert (reply.answers.run_id, reply.answers.server_round) == ("a" * 32, 3)


@pytest.mark.slow
def test_null_model_stays_the_initial_model_under_patient_dp(tmp_path):
    # Before: the global weights came back as the update, the model doubled every round and
    # patient-level DP's norm check rejected every hospital in round 3.
    script = textwrap.dedent(f"""
        from pathlib import Path
        from common.config import RunConfig
        from benchmarks.null_client import build_null_app
        from simulations.engine.app_recipe import RecipeClientApp
        from simulations.engine.ephemeral_roster import roster_dir
        from simulations.engine.simulate import simulate
        config = RunConfig.from_run_config({{"task": "heart-disease", "num-server-rounds": 4,
                                            "dp.mode": "patient"}})
        run_dir = Path({str(tmp_path)!r})
        app = RecipeClientApp(build_null_app, (), roster_dir(run_dir))
        simulate(config, run_dir, client_app=app)
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
