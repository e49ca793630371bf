"""Every secure-aggregation payload survives Flower's ConfigRecord wire encoding unchanged.

The secagg package never imports Flower; this test only checks that the glue can map each
request, reply and client state 1:1 onto a ConfigRecord and its protobuf form.
"""

import numpy as np
import pytest
from secagg_harness import Consortium

from common.secagg.protocol import SecAggClient, Stage

serde = pytest.importorskip("flwr.common.serde")
flwr_app = pytest.importorskip("flwr.app")


def _over_the_wire(payload):
    record = flwr_app.ConfigRecord(payload)
    return dict(serde.config_record_from_proto(serde.config_record_to_proto(record)))


def test_protocol_payloads_and_client_state_round_trip_through_config_records():
    # Arrange: 5 hospitals, c = 1, t = 4; one drops after sharing keys
    con = Consortium(5, c=1, threshold=4)
    rng = np.random.default_rng(0)
    updates = {name: rng.integers(0, 2**63, size=32, dtype=np.uint64) for name in con.names}
    records = {name: _over_the_wire(con.client(name).to_record()) for name in con.names}
    server = con.server(round_number=3, vector_length=32)
    gone = con.names[4]

    # Act: every request, reply and stored client state crosses a ConfigRecord
    result = None
    while server.stage is not None:
        stage = server.stage
        for name, request in server.requests().items():
            if stage == Stage.MASKED_INPUT and name == gone:
                continue
            client = SecAggClient.from_record(records[name], roster=con.roster,
                                              signing_key=con.signing_keys[name])
            quantized = updates[name] if stage == Stage.MASKED_INPUT else None
            reply = client.handle(_over_the_wire(request), quantized=quantized,
                                  settings=con.settings)
            records[name] = _over_the_wire(client.to_record())
            server.receive(name, _over_the_wire(reply))
        result = server.close_stage()

    # Assert
    expected = sum((updates[name] for name in con.names[:4]), np.zeros(32, dtype=np.uint64))
    np.testing.assert_array_equal(result.total, expected)
    assert result.revealed_mask_keys == (gone,)
