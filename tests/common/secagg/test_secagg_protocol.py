"""The client and server state machines: exact sums, dropout recovery, aborts, tampering, stage
order, re-keying, and bad input rejected with messages that say why."""

import numpy as np
import pytest

from common.errors import SecAggProtocolError
from common.secagg.protocol import (
    Key,
    PublicKeys,
    SecAggClient,
    SecAggServer,
    Stage,
    vector_to_bytes,
)
from common.secagg.quantization import dequantize_sum, quantize

LENGTH = 64


def _updates(ids, rng, length=LENGTH):
    return {
        node: rng.integers(-(2**40), 2**40, size=length).astype(np.int64).view(np.uint64)
        for node in ids
    }


def _plain_sum(updates, ids):
    total = np.zeros(next(iter(updates.values())).shape, dtype=np.uint64)
    for node in ids:
        total += updates[node]
    return total


def _run_round(server, clients, updates, *, drop=None, tamper=None):
    """Drive a round to the end. ``drop`` maps a stage to nodes that stop answering from it on;
    ``tamper(stage, node, payload)`` may alter a request (node is the receiver) or a reply."""
    drop, gone, transcript = drop or {}, set(), {}
    result = None
    while server.stage is not None:
        stage = server.stage
        gone |= set(drop.get(stage, ()))
        for node, request in server.requests().items():
            if node in gone:
                continue
            if tamper is not None:
                request = tamper("request", stage, node, request)
            quantized = updates[node] if stage == Stage.MASKED_INPUT else None
            reply = clients[node].handle(request, quantized=quantized)
            if tamper is not None:
                reply = tamper("reply", stage, node, reply)
            transcript[(stage, node)] = reply
            server.receive(node, reply)
        result = server.close_stage()
    return result, transcript


def _setup(n, threshold, *, round_number=1, allow_key_reuse=False, seed=0):
    ids = list(range(101, 101 + n))
    clients = {node: SecAggClient(node, allow_key_reuse=allow_key_reuse) for node in ids}
    server = SecAggServer(
        round_number=round_number, node_ids=ids, threshold=threshold, vector_length=LENGTH
    )
    return ids, clients, server, _updates(ids, np.random.default_rng(seed))


@pytest.mark.parametrize(("n", "threshold"), [(3, 2), (4, 3), (10, 6), (10, 10)])
def test_protocol_unmasked_sum_equals_plain_sum_of_quantized_updates(n, threshold):
    # Arrange
    ids, clients, server, updates = _setup(n, threshold)

    # Act
    result, transcript = _run_round(server, clients, updates)

    # Assert
    np.testing.assert_array_equal(result.total, _plain_sum(updates, ids))
    assert result.survivor_ids == tuple(ids)
    assert result.dropped_ids == () and result.revealed_mask_key_ids == ()
    # what the server received from each hospital is not its update
    for node in ids:
        masked = transcript[(Stage.MASKED_INPUT, node)][Key.MASKED_INPUT]
        assert masked != vector_to_bytes(updates[node])


def test_protocol_dequantized_mean_within_quantization_error():
    # Arrange: a coarse scale, so the stated error bound (1/scale for the mean) is what is tested
    rng = np.random.default_rng(7)
    n, clip_bound, scale = 5, 1.0, 2.0**12
    ids, clients, server, _ = _setup(n, 3)
    floats = {node: rng.normal(0.0, 0.3, size=LENGTH) for node in ids}
    quantized = {
        node: quantize(floats[node], clip_bound=clip_bound, scale=scale, rng=rng).values
        for node in ids
    }

    # Act
    result, _ = _run_round(server, clients, quantized)
    mean = dequantize_sum(result.total, num_summands=n, clip_bound=clip_bound, scale=scale) / n

    # Assert
    float_mean = np.mean([np.clip(floats[node], -1.0, 1.0) for node in ids], axis=0)
    assert np.max(np.abs(mean - float_mean)) < 1.0 / scale


@pytest.mark.parametrize("num_dropped", [1, 2, 3])
def test_protocol_recovers_survivors_sum_when_hospitals_drop_after_sharing_keys(num_dropped):
    # Arrange: n = 7, t = 4; the dropped shared keys (everyone masked with them) but never
    # sent their masked update
    ids, clients, server, updates = _setup(7, 4)
    dropped = ids[1 : 1 + num_dropped]

    # Act
    result, _ = _run_round(server, clients, updates, drop={Stage.MASKED_INPUT: dropped})

    # Assert
    survivors = [node for node in ids if node not in dropped]
    np.testing.assert_array_equal(result.total, _plain_sum(updates, survivors))
    assert result.survivor_ids == tuple(survivors)
    assert result.revealed_mask_key_ids == tuple(dropped)


@pytest.mark.parametrize("num_dropped", [1, 2, 3])
def test_protocol_recovers_sum_when_hospitals_drop_after_sending_masked_input(num_dropped):
    # The silent hospitals' updates are in the sum; t = 4 of 7 still reveal shares.
    ids, clients, server, updates = _setup(7, 4)
    silent = ids[-num_dropped:]

    result, _ = _run_round(server, clients, updates, drop={Stage.UNMASK: silent})

    np.testing.assert_array_equal(result.total, _plain_sum(updates, ids))
    assert result.revealed_mask_key_ids == ()


@pytest.mark.parametrize("stage", [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS])
def test_protocol_excludes_hospitals_that_drop_before_masking(stage):
    ids, clients, server, updates = _setup(6, 4)

    result, _ = _run_round(server, clients, updates, drop={stage: [ids[0], ids[3]]})

    survivors = [node for node in ids if node not in (ids[0], ids[3])]
    np.testing.assert_array_equal(result.total, _plain_sum(updates, survivors))
    assert result.dropped_ids == (ids[0], ids[3])
    assert result.revealed_mask_key_ids == ()  # they never masked: nothing to reveal


@pytest.mark.parametrize("stage", [Stage.MASKED_INPUT, Stage.UNMASK])
def test_protocol_aborts_with_fewer_than_t_survivors(stage):
    # Arrange: n = 7, t = 4; n - t + 1 = 4 hospitals stop answering
    ids, clients, server, updates = _setup(7, 4)

    # Act / Assert
    with pytest.raises(SecAggProtocolError, match="round aborts without unmasking") as caught:
        _run_round(server, clients, updates, drop={stage: ids[:4]})
    assert caught.value.stage == stage
    with pytest.raises(SecAggProtocolError, match="the round was aborted"):
        server.requests()


def test_protocol_aborts_below_three_survivors_even_when_t_is_met():
    # n = 3, t = 2: two survivors would each learn the other's update from the sum
    ids, clients, server, updates = _setup(3, 2)

    with pytest.raises(SecAggProtocolError, match="at least 3 participants"):
        _run_round(server, clients, updates, drop={Stage.MASKED_INPUT: [ids[0]]})


def test_protocol_rejects_tampered_routed_ciphertext():
    # Arrange: the server flips one bit of a ciphertext it routes to the second hospital
    ids, clients, server, updates = _setup(4, 3)

    def tamper(direction, stage, node, payload):
        if direction == "request" and stage == Stage.MASKED_INPUT and node == ids[1]:
            ciphertexts = list(payload[Key.CIPHERTEXTS])
            ciphertexts[0] = bytes([ciphertexts[0][0] ^ 1]) + ciphertexts[0][1:]
            return {**payload, Key.CIPHERTEXTS: ciphertexts}
        return payload

    # Act / Assert
    with pytest.raises(SecAggProtocolError, match="failed authentication"):
        _run_round(server, clients, updates, tamper=tamper)


def test_protocol_rejects_swapped_routed_ciphertexts():
    ids, clients, server, updates = _setup(4, 3)

    def swap(direction, stage, node, payload):
        if direction == "request" and stage == Stage.MASKED_INPUT and node == ids[0]:
            return {**payload, Key.CIPHERTEXTS: list(reversed(payload[Key.CIPHERTEXTS]))}
        return payload

    with pytest.raises(SecAggProtocolError, match="from node 102 to node 101 .* failed authenti"):
        _run_round(server, clients, updates, tamper=swap)


def test_protocol_rejects_tampered_mask_key_share():
    # Arrange: one hospital drops; the first share holder corrupts its share of that mask key
    ids, clients, server, updates = _setup(5, 3)

    def tamper(direction, stage, node, payload):
        if direction == "reply" and stage == Stage.UNMASK and node == ids[0]:
            share = payload[Key.MASK_KEY_SHARES][0]
            corrupted = share[:-1] + bytes([share[-1] ^ 1])
            return {**payload, Key.MASK_KEY_SHARES: [corrupted]}
        return payload

    # Act / Assert
    with pytest.raises(SecAggProtocolError, match="do not match its public key"):
        _run_round(server, clients, updates, drop={Stage.MASKED_INPUT: [ids[4]]}, tamper=tamper)
    with pytest.raises(SecAggProtocolError, match="the round was aborted"):
        server.close_stage()


@pytest.mark.parametrize(
    ("n", "threshold", "message"),
    [
        (4, 5, "threshold t=5 must be <= the number of participants n=4"),
        (4, 2, "t=2 must be > n/2 = 2 .*two disjoint groups of t hospitals could each unmask"),
        (5, 2, "must be > n/2 = 2.5"),
        (2, 2, "at least 3 participants, got 2: with 2, each learns the other's update"),
    ],
    ids=["t>n", "t=n/2", "t<n/2", "n=2"],
)
def test_server_rejects_unsafe_threshold_or_too_few_participants(n, threshold, message):
    with pytest.raises(ValueError, match=message):
        SecAggServer(
            round_number=1, node_ids=range(1, n + 1), threshold=threshold, vector_length=LENGTH
        )


def test_server_rejects_reply_to_a_stage_not_asked():
    # Arrange: the server is at advertise-keys; a node answers as if asked to unmask
    ids, clients, server, _ = _setup(3, 2)
    reply = {Key.STAGE: Stage.UNMASK, Key.ROUND: 1}

    # Act / Assert
    with pytest.raises(SecAggProtocolError, match="reply to stage 'unmask', which was not asked"):
        server.receive(ids[0], reply)


def test_server_rejects_reply_from_a_node_not_asked_and_duplicates():
    ids, clients, server, _ = _setup(3, 2)
    reply = clients[ids[0]].handle(server.requests()[ids[0]])
    server.receive(ids[0], reply)

    with pytest.raises(SecAggProtocolError, match="node 999 was not asked"):
        server.receive(999, reply)
    with pytest.raises(SecAggProtocolError, match="node 101 already replied"):
        server.receive(ids[0], reply)


def test_server_rejects_reply_for_another_round():
    ids, clients, server, _ = _setup(3, 2)

    with pytest.raises(SecAggProtocolError, match="reply is not for round 1"):
        server.receive(ids[0], {Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: 2})


def test_server_rejects_masked_vector_of_wrong_length():
    # Arrange: one hospital sends one word too few
    ids, clients, server, updates = _setup(3, 2)

    def shorten(direction, stage, node, payload):
        if direction == "reply" and stage == Stage.MASKED_INPUT and node == ids[2]:
            return {**payload, Key.MASKED_INPUT: payload[Key.MASKED_INPUT][:-8]}
        return payload

    # Act / Assert
    expected = "masked vector of node 103 has 63 words, expected 64"
    with pytest.raises(SecAggProtocolError, match=expected):
        _run_round(server, clients, updates, tamper=shorten)


def test_client_rejects_update_of_wrong_length():
    ids, clients, server, updates = _setup(3, 2)
    updates[ids[1]] = updates[ids[1]][:-1]

    with pytest.raises(SecAggProtocolError, match="must be uint64 of shape \\(64,\\)"):
        _run_round(server, clients, updates)


@pytest.mark.parametrize(
    ("threshold", "message"),
    [(2, "must be > n/2 = 2"), (5, "must be <= the number of participants")],
    ids=["t<=n/2", "t>n"],
)
def test_client_refuses_unsafe_threshold_from_the_server(threshold, message):
    # A server that lowers the threshold could unmask with too few shares; the client checks.
    ids, clients, server, updates = _setup(4, 3)

    def lower(direction, stage, node, payload):
        if direction == "request" and stage == Stage.SHARE_KEYS:
            return {**payload, Key.THRESHOLD: threshold}
        return payload

    with pytest.raises(SecAggProtocolError, match=message):
        _run_round(server, clients, updates, tamper=lower)


def test_client_never_reveals_both_shares_of_a_peer():
    # A server listing a node as survivor and dropped would get its seed and its mask key.
    ids, clients, server, updates = _setup(4, 3)

    def both(direction, stage, node, payload):
        if direction == "request" and stage == Stage.UNMASK:
            return {**payload, Key.DROPPED_IDS: [ids[3]]}
        return payload

    with pytest.raises(SecAggProtocolError, match="split the nodes that shared keys, disjointly"):
        _run_round(server, clients, updates, tamper=both)


ORDER = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK]
TRANSITIONS = [
    # (stages the client answered this round, stage requested, error or None if valid)
    (0, Stage.ADVERTISE_KEYS, None),
    (0, Stage.SHARE_KEYS, "key reuse is disabled"),
    (0, Stage.MASKED_INPUT, "'masked-input' was not asked: round 1 has not begun"),
    (0, Stage.UNMASK, "'unmask' was not asked: round 1 has not begun"),
    (1, Stage.ADVERTISE_KEYS, "was not asked: round 1 expects share-keys"),
    (1, Stage.SHARE_KEYS, None),
    (1, Stage.MASKED_INPUT, "was not asked: round 1 expects share-keys"),
    (1, Stage.UNMASK, "was not asked: round 1 expects share-keys"),
    (2, Stage.ADVERTISE_KEYS, "was not asked: round 1 expects masked-input"),
    (2, Stage.SHARE_KEYS, "was not asked: round 1 expects masked-input"),
    (2, Stage.MASKED_INPUT, None),
    (2, Stage.UNMASK, "was not asked: round 1 expects masked-input"),
    (3, Stage.ADVERTISE_KEYS, "was not asked: round 1 expects unmask"),
    (3, Stage.SHARE_KEYS, "was not asked: round 1 expects unmask"),
    (3, Stage.MASKED_INPUT, "was not asked: round 1 expects unmask"),
    (3, Stage.UNMASK, None),
    (4, Stage.ADVERTISE_KEYS, "round 1 expects no further stage"),
    (4, Stage.SHARE_KEYS, "round 1 expects no further stage"),
    (4, Stage.MASKED_INPUT, "round 1 expects no further stage"),
    (4, Stage.UNMASK, "round 1 expects no further stage"),
]


@pytest.mark.parametrize(
    ("answered", "requested", "error"),
    TRANSITIONS,
    ids=[f"after-{a}-{s}" for a, s, _ in TRANSITIONS],
)
def test_client_stage_transitions(answered, requested, error):
    # Arrange: drive a round until the probe hospital has answered `answered` stages
    ids, clients, server, updates = _setup(3, 2)
    probe = clients[ids[0]]
    real_requests = {}
    for _ in range(answered):
        for node, request in server.requests().items():
            server.receive(node, clients[node].handle(request, quantized=updates[node]))
        server.close_stage()
    if server.stage is not None:
        real_requests[server.stage] = server.requests()[ids[0]]

    # Act / Assert
    if error is None:
        reply = probe.handle(real_requests[requested], quantized=updates[ids[0]])
        assert reply[Key.STAGE] == requested
    else:
        with pytest.raises(SecAggProtocolError, match=error):
            probe.handle({Key.STAGE: requested, Key.ROUND: 1}, quantized=updates[ids[0]])


def test_client_rejects_request_for_an_earlier_round():
    ids, clients, server, updates = _setup(3, 2, round_number=5)
    _run_round(server, clients, updates)

    with pytest.raises(SecAggProtocolError, match="request for round 4, but round 5 has begun"):
        clients[ids[0]].handle({Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: 4})


def test_protocol_reuses_keys_across_rounds_with_fresh_masks():
    # Arrange: round 1 with advertise-keys; round 2 starts at share-keys with the same keys
    ids, clients, first, updates = _setup(4, 3, allow_key_reuse=True)
    _, transcript_1 = _run_round(first, clients, updates)
    second = SecAggServer(
        round_number=2,
        node_ids=ids,
        threshold=3,
        vector_length=LENGTH,
        known_public_keys=first.reusable_public_keys(),
    )

    # Act
    assert second.stage == Stage.SHARE_KEYS
    result, transcript_2 = _run_round(second, clients, updates)

    # Assert: exact sum; the same update is masked differently in round 2
    np.testing.assert_array_equal(result.total, _plain_sum(updates, ids))
    for node in ids:
        round_1 = np.frombuffer(transcript_1[(Stage.MASKED_INPUT, node)][Key.MASKED_INPUT], "<u8")
        round_2 = np.frombuffer(transcript_2[(Stage.MASKED_INPUT, node)][Key.MASKED_INPUT], "<u8")
        assert np.count_nonzero(round_1 == round_2) == 0


def test_client_must_rekey_after_its_mask_key_was_revealed():
    # Arrange: in round 1 hospital 104 drops after sharing keys, so its mask key is rebuilt
    ids, clients, first, updates = _setup(4, 3, allow_key_reuse=True)
    keys = {}

    def record_keys(direction, stage, node, payload):
        if direction == "request" and stage == Stage.SHARE_KEYS:
            for i, owner in enumerate(payload[Key.NODE_IDS]):
                keys[owner] = PublicKeys(
                    mask=payload[Key.MASK_PUBLIC_KEYS][i],
                    encryption=payload[Key.ENCRYPTION_PUBLIC_KEYS][i],
                )
        return payload

    result, _ = _run_round(
        first, clients, updates, drop={Stage.MASKED_INPUT: [ids[3]]}, tamper=record_keys
    )
    assert result.revealed_mask_key_ids == (ids[3],)
    assert set(first.reusable_public_keys()) == set(ids[:3])
    assert clients[ids[3]].mask_key_exposed

    # Act / Assert: a server that offers reuse to 104 anyway is refused ...
    reuse = SecAggServer(
        round_number=2, node_ids=ids, threshold=3, vector_length=LENGTH, known_public_keys=keys
    )
    with pytest.raises(SecAggProtocolError, match="must re-key with advertise-keys"):
        clients[ids[3]].handle(reuse.requests()[ids[3]])

    # ... and after re-keying, 104 takes part again
    third = SecAggServer(
        round_number=3,
        node_ids=ids,
        threshold=3,
        vector_length=LENGTH,
        known_public_keys=first.reusable_public_keys(),
    )
    assert list(third.requests()) == [ids[3]]  # only 104 is asked to advertise
    result, _ = _run_round(third, clients, updates)
    np.testing.assert_array_equal(result.total, _plain_sum(updates, ids))
    assert not clients[ids[3]].mask_key_exposed


def test_client_refuses_key_reuse_by_default():
    ids, clients, first, updates = _setup(3, 2)
    _run_round(first, clients, updates)
    second = SecAggServer(
        round_number=2,
        node_ids=ids,
        threshold=2,
        vector_length=LENGTH,
        known_public_keys=first.reusable_public_keys(),
    )

    with pytest.raises(SecAggProtocolError, match="key reuse is disabled"):
        clients[ids[0]].handle(second.requests()[ids[0]])


class _RecordBackedClient:
    """A client rebuilt from its record for every message, as the Flower glue keeps it."""

    def __init__(self, node_id):
        self.record = SecAggClient(node_id).to_record()

    def handle(self, request, *, quantized=None):
        client = SecAggClient.from_record(self.record)
        try:
            return client.handle(request, quantized=quantized)
        finally:
            self.record = client.to_record()


def test_protocol_works_when_clients_are_rebuilt_from_records_between_stages():
    ids, _, server, updates = _setup(5, 3)
    clients = {node: _RecordBackedClient(node) for node in ids}

    result, _ = _run_round(server, clients, updates, drop={Stage.MASKED_INPUT: [ids[2]]})

    survivors = [node for node in ids if node != ids[2]]
    np.testing.assert_array_equal(result.total, _plain_sum(updates, survivors))


def test_client_from_record_rejects_incomplete_state():
    record = SecAggClient(7).to_record()
    del record["mask-key"]

    with pytest.raises(SecAggProtocolError, match="client state field 'mask-key' is invalid"):
        SecAggClient.from_record(record)


def test_client_state_repr_never_shows_key_material():
    ids, clients, server, updates = _setup(3, 2)
    server.receive(ids[0], clients[ids[0]].handle(server.requests()[ids[0]]))
    state = clients[ids[0]].state

    text = repr(state)

    assert state.mask_key and state.mask_key.hex() not in text and repr(state.mask_key) not in text
    assert repr(state.encryption_key) not in text
