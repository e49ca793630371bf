"""Every secure-aggregation payload survives Flower's ConfigRecord wire encoding unchanged.

The secagg package never imports Flower; this test only checks that the glue can map each
request, reply and client state 1:1 onto a ConfigRecord and its protobuf form.
"""

import numpy as np
import pytest

from common.secagg.protocol import SecAggClient, SecAggServer, Stage

serde = pytest.importorskip("flwr.common.serde")
flwr_app = pytest.importorskip("flwr.app")


def _over_the_wire(payload):
    record = flwr_app.ConfigRecord(payload)
    return dict(serde.config_record_from_proto(serde.config_record_to_proto(record)))


def test_protocol_payloads_and_client_state_round_trip_through_config_records():
    # Arrange
    ids = [11, 12, 13, 14]
    rng = np.random.default_rng(0)
    updates = {node: rng.integers(0, 2**63, size=32, dtype=np.uint64) for node in ids}
    records = {node: _over_the_wire(SecAggClient(node).to_record()) for node in ids}
    server = SecAggServer(round_number=3, node_ids=ids, threshold=3, vector_length=32)

    # Act: every request, reply and stored client state crosses a ConfigRecord
    result = None
    while server.stage is not None:
        stage = server.stage
        for node, request in server.requests().items():
            if stage == Stage.MASKED_INPUT and node == 14:
                continue  # 14 drops after sharing keys
            client = SecAggClient.from_record(records[node])
            quantized = updates[node] if stage == Stage.MASKED_INPUT else None
            reply = client.handle(_over_the_wire(request), quantized=quantized)
            records[node] = _over_the_wire(client.to_record())
            server.receive(node, _over_the_wire(reply))
        result = server.close_stage()

    # Assert
    expected = updates[11] + updates[12] + updates[13]
    np.testing.assert_array_equal(result.total, expected)
