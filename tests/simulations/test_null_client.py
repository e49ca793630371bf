"""The null client's precomputed facts give the same replies as computing them."""

import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

import simulations.null_client as null_client
from common import record_keys as keys


def _evaluate(node_config: dict) -> Message:
    content = RecordDict({keys.ARRAYS: ArrayRecord([np.zeros(3)]), keys.CONFIG: ConfigRecord(
        {keys.TASK: "heart-disease", keys.HOSPITALS: 4})})
    msg = Message(content=content, metadata=Metadata(
        run_id=1, message_id="m1", src_node_id=1, dst_node_id=7, reply_to_message_id="",
        group_id="1", created_at=time.time(), ttl=60.0, message_type="evaluate"))
    context = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(),
                      run_config={})
    return null_client.evaluate(msg, context)


def test_facts_file_gives_the_same_reply_as_computing(tmp_path, monkeypatch):
    computed = _evaluate({"partition-id": 2})
    facts = null_client.write_facts(tmp_path, "heart-disease", 4)
    monkeypatch.setattr(null_client, "FACTS_FILE", facts)
    stored = _evaluate({"partition-id": 2})
    assert dict(stored.content[keys.HOSPITAL]) == {keys.HOSPITAL_NAME: "switzerland",
                                                   keys.HOSPITAL_INDEX: 2}
    assert dict(computed.content[keys.HOSPITAL]) == dict(stored.content[keys.HOSPITAL])
    a, b = computed.content[keys.STATISTICS], stored.content[keys.STATISTICS]
    assert set(a.keys()) == set(b.keys()) and "score_hist" in a
    for key in a.keys():
        left, right = a[key].numpy(), b[key].numpy()
        assert left.dtype == right.dtype and left.shape == right.shape
        np.testing.assert_array_equal(left, right)
