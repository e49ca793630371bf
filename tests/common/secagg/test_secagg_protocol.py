"""The client and server state machines: exact sums, dropout recovery, aborts, tampering, stage
order, fresh keys every round, and bad input rejected with messages that say why.
"""

import numpy as np
import pytest
from secagg_harness import LENGTH, Consortium, plain_sum, random_updates, run_round

from common.errors import SecAggProtocolError
from common.secagg.protocol import Key, SecAggClient, Stage, vector_to_bytes
from common.secagg.quantization import dequantize_sum, quantize


def _setup(n, threshold=None, *, c=1, seed=0, round_number=1):
    con = Consortium(n, c=c, threshold=threshold)
    clients = con.clients()
    server = con.server(round_number=round_number)
    return con, clients, server, random_updates(con.names, np.random.default_rng(seed))


@pytest.mark.parametrize(("n", "c", "threshold"), [(3, 0, 2), (4, 1, 3), (10, 1, 6), (10, 3, 10)])
def test_protocol_unmasked_sum_equals_plain_sum_of_quantized_updates(n, c, threshold):
    # Arrange
    con, clients, server, updates = _setup(n, threshold, c=c)

    # Act
    result, transcript = run_round(server, clients, updates, settings=con.settings)

    # Assert
    np.testing.assert_array_equal(result.total, plain_sum(updates, con.names))
    assert result.survivors == tuple(con.names)
    assert result.dropped == () and result.revealed_mask_keys == () and result.excluded == {}
    # what the server received from each hospital is not its update
    for name in con.names:
        masked = transcript[(Stage.MASKED_INPUT, name)][Key.MASKED_INPUT]
        assert masked != vector_to_bytes(updates[name])


def test_protocol_dequantized_mean_within_quantization_error():
    # Arrange: a coarse scale, so the stated error bound (1/scale for the mean) is what is tested
    rng = np.random.default_rng(7)
    n, clip_bound, scale = 5, 1.0, 2.0**12
    con, clients, server, _ = _setup(n, 4)
    floats = {name: rng.normal(0.0, 0.3, size=LENGTH) for name in con.names}
    quantized = {
        name: quantize(floats[name], clip_bound=clip_bound, scale=scale, rng=rng).values
        for name in con.names
    }

    # Act
    result, _ = run_round(server, clients, quantized, settings=con.settings)
    mean = dequantize_sum(result.total, num_summands=n, clip_bound=clip_bound, scale=scale) / n

    # Assert
    float_mean = np.mean([np.clip(floats[name], -1.0, 1.0) for name in con.names], axis=0)
    assert np.max(np.abs(mean - float_mean)) < 1.0 / scale


@pytest.mark.parametrize("num_dropped", [1, 2, 3])
def test_protocol_recovers_survivors_sum_when_hospitals_drop_after_sharing_keys(num_dropped):
    # Arrange: n = 7, c = 0, t = 4; the dropped shared keys (everyone masked with them) but
    # never sent their masked update
    con, clients, server, updates = _setup(7, 4, c=0)
    dropped = con.names[1 : 1 + num_dropped]

    # Act
    result, _ = run_round(server, clients, updates, settings=con.settings,
                          drop={Stage.MASKED_INPUT: dropped})

    # Assert
    survivors = [name for name in con.names if name not in dropped]
    np.testing.assert_array_equal(result.total, plain_sum(updates, survivors))
    assert result.survivors == tuple(survivors)
    assert result.revealed_mask_keys == tuple(dropped)


@pytest.mark.parametrize("stage", [Stage.CONSISTENCY_CHECK, Stage.UNMASK])
@pytest.mark.parametrize("num_silent", [1, 2, 3])
def test_protocol_recovers_sum_when_hospitals_fall_silent_after_masking(stage, num_silent):
    # Their updates are in the sum; t = 4 of 7 still sign and reveal shares.
    con, clients, server, updates = _setup(7, 4, c=0)
    silent = con.names[-num_silent:]

    result, _ = run_round(server, clients, updates, settings=con.settings, drop={stage: silent})

    np.testing.assert_array_equal(result.total, plain_sum(updates, con.names))
    assert result.revealed_mask_keys == ()


@pytest.mark.parametrize("stage", [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS])
def test_protocol_excludes_hospitals_that_drop_before_masking(stage):
    con, clients, server, updates = _setup(6, 4)
    gone = [con.names[0], con.names[3]]

    result, _ = run_round(server, clients, updates, settings=con.settings, drop={stage: gone})

    survivors = [name for name in con.names if name not in gone]
    np.testing.assert_array_equal(result.total, plain_sum(updates, survivors))
    assert result.dropped == tuple(gone)
    assert result.revealed_mask_keys == ()  # they never masked: nothing to reveal


@pytest.mark.parametrize("stage", [Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK, Stage.UNMASK])
def test_protocol_aborts_with_fewer_than_t_survivors(stage):
    # Arrange: n = 7, t = 4; n - t + 1 = 4 hospitals stop answering
    con, clients, server, updates = _setup(7, 4, c=0)

    # Act / Assert
    with pytest.raises(SecAggProtocolError, match="round aborts without unmasking") as caught:
        run_round(server, clients, updates, settings=con.settings, drop={stage: con.names[:4]})
    assert caught.value.stage == stage
    with pytest.raises(SecAggProtocolError, match="the round was aborted"):
        server.requests()


def test_protocol_aborts_below_three_survivors_even_when_t_is_met():
    # n = 3, c = 0, t = 2: two survivors would each learn the other's update from the sum
    con, clients, server, updates = _setup(3, 2, c=0)

    with pytest.raises(SecAggProtocolError, match="at least 3 participants"):
        run_round(server, clients, updates, settings=con.settings,
                  drop={Stage.MASKED_INPUT: [con.names[0]]})


def test_client_rejects_tampered_shares_by_reporting_the_sender_not_by_aborting():
    # The server flips one bit of a ciphertext it routes to the second hospital: that hospital
    # reports it; the sender is treated as dropped and the round completes without it.
    con, clients, server, updates = _setup(5, 4)
    victim, sender = con.names[1], con.names[0]

    def tamper(direction, stage, name, payload):
        if direction == "request" and stage == Stage.MASKED_INPUT and name == victim:
            ciphertexts = list(payload[Key.CIPHERTEXTS])
            ciphertexts[0] = bytes([ciphertexts[0][0] ^ 1]) + ciphertexts[0][1:]
            return {**payload, Key.CIPHERTEXTS: ciphertexts}
        return payload

    result, transcript = run_round(server, clients, updates, settings=con.settings, tamper=tamper)

    assert transcript[(Stage.MASKED_INPUT, victim)][Key.FAILED_SENDERS] == [sender]
    assert result.survivors == tuple(con.names[1:]) and result.dropped == (sender,)
    # t = 4, and only 3 survivors hold the sender's key shares: its masks go with the pair keys
    # the survivors reveal, and its mask key stays secret
    assert result.revealed_mask_keys == ()
    np.testing.assert_array_equal(result.total, plain_sum(updates, con.names[1:]))


def test_server_rejects_reply_to_a_stage_not_asked():
    # Arrange: the server is at advertise-keys; a hospital answers as if asked to unmask
    con, clients, server, _ = _setup(3, 2, c=0)
    reply = {Key.STAGE: Stage.UNMASK, Key.ROUND: 1}

    # Act / Assert
    with pytest.raises(SecAggProtocolError, match="reply to stage 'unmask', which was not asked"):
        server.receive(con.names[0], reply)


def test_server_rejects_reply_from_a_hospital_not_asked_and_duplicates():
    con, clients, server, _ = _setup(3, 2, c=0)
    name = con.names[0]
    reply = clients[name].handle(server.requests()[name], settings=con.settings)
    server.receive(name, reply)

    with pytest.raises(SecAggProtocolError, match="'mallory' was not asked"):
        server.receive("mallory", reply)
    with pytest.raises(SecAggProtocolError, match=f"'{name}' already replied"):
        server.receive(name, reply)


def test_server_rejects_reply_for_another_round():
    con, clients, server, _ = _setup(3, 2, c=0)

    with pytest.raises(SecAggProtocolError, match="reply is not for round 1"):
        server.receive(con.names[0], {Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: 2})


@pytest.mark.parametrize(
    ("n", "c", "threshold", "message"),
    [
        (4, 0, 5, "threshold t=5 must be <= the number of participants n=4"),
        (4, 0, 2, "t=2 must be >= floor\\(\\(n \\+ c\\)/2\\) \\+ 1 = 3"),
        (5, 1, 3, "t=3 must be >= floor\\(\\(n \\+ c\\)/2\\) \\+ 1 = 4 \\(n=5, c=1\\)"),
    ],
    ids=["t>n", "t=n/2", "t<(n+c)/2"],
)
def test_server_rejects_unsafe_threshold(n, c, threshold, message):
    con = Consortium(n, c=c, threshold=min(threshold, n), min_threshold=2 if c < 2 else c + 1)
    settings = con.with_settings(threshold=threshold, honest=1)

    with pytest.raises(ValueError, match=message):
        con.server(settings=settings)


def test_server_rejects_masked_vector_of_wrong_length_and_excludes_the_sender():
    con, clients, server, updates = _setup(5, 4)
    bad = con.names[2]

    def shorten(direction, stage, name, payload):
        if direction == "reply" and stage == Stage.MASKED_INPUT and name == bad:
            return {**payload, Key.MASKED_INPUT: payload[Key.MASKED_INPUT][:-8]}
        return payload

    result, _ = run_round(server, clients, updates, settings=con.settings, tamper=shorten)

    assert "has 63 words, expected 64" in result.excluded[bad]
    others = [name for name in con.names if name != bad]
    np.testing.assert_array_equal(result.total, plain_sum(updates, others))


def test_client_rejects_update_of_wrong_length():
    con, clients, server, updates = _setup(3, 2, c=0)
    updates[con.names[1]] = updates[con.names[1]][:-1]

    with pytest.raises(SecAggProtocolError, match="must be uint64 of shape \\(64,\\)"):
        run_round(server, clients, updates, settings=con.settings)


@pytest.mark.parametrize(
    ("threshold", "message"),
    [(2, "asks for t=2, but this hospital signed t=3"),
     (5, "asks for t=5, but this hospital signed t=3")],
    ids=["lower", "higher"],
)
def test_client_refuses_a_threshold_other_than_the_one_it_signed(threshold, message):
    con, clients, server, updates = _setup(4, 3, c=1)

    def change(direction, stage, name, payload):
        if direction == "request" and stage == Stage.SHARE_KEYS:
            return {**payload, Key.THRESHOLD: threshold}
        return payload

    with pytest.raises(SecAggProtocolError, match=message):
        run_round(server, clients, updates, settings=con.settings, tamper=change)


def test_client_never_reveals_both_shares_of_a_peer():
    # A server listing a hospital as survivor and dropped would get its seed and its mask key.
    con, clients, server, updates = _setup(4, 3)

    def both(direction, stage, name, payload):
        if direction == "request" and stage == Stage.CONSISTENCY_CHECK:
            return {**payload, Key.DROPPED: [con.names[3]]}
        return payload

    with pytest.raises(SecAggProtocolError, match="split the hospitals that shared keys, disjoint"):
        run_round(server, clients, updates, settings=con.settings, tamper=both)


ORDER = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY_CHECK,
         Stage.UNMASK]
# (stages the probe answered this round, stage requested); repeats of the consistency check
# and of unmask for the identical signed set are allowed and covered by the differencing tests
TRANSITIONS = [
    (answered, requested)
    for answered in range(6)
    for requested in ORDER
    if not (answered >= 4 and requested == Stage.CONSISTENCY_CHECK)
    and not (answered == 5 and requested == Stage.UNMASK)
]


def _expected_error(answered, requested):
    if answered < 5 and requested == ORDER[answered]:
        return None
    if answered == 0:
        return f"'{requested}' was not asked: round 1 has not begun"
    if answered == 5:
        return "round 1 expects no further stage"
    return f"was not asked: round 1 expects {ORDER[answered]}"


@pytest.mark.parametrize(("answered", "requested"), TRANSITIONS,
                         ids=[f"after-{a}-{r}" for a, r in TRANSITIONS])
def test_client_stage_transitions(answered, requested):
    # Arrange: drive a round until the probe hospital has answered `answered` stages
    con, clients, server, updates = _setup(3, 2, c=0)
    probe = clients[con.names[0]]
    for _ in range(answered):
        for name, request in server.requests().items():
            reply = clients[name].handle(request, quantized=updates[name], settings=con.settings)
            server.receive(name, reply)
        server.close_stage()
    error = _expected_error(answered, requested)

    # Act / Assert
    if error is None:
        request = server.requests()[con.names[0]]
        reply = probe.handle(request, quantized=updates[con.names[0]], settings=con.settings)
        assert reply[Key.STAGE] == requested
    else:
        with pytest.raises(SecAggProtocolError, match=error):
            probe.handle({Key.STAGE: requested, Key.ROUND: 1}, quantized=updates[con.names[0]],
                         settings=con.settings)


def test_client_rejects_request_for_an_earlier_round():
    con, clients, server, updates = _setup(3, 2, c=0, round_number=5)
    run_round(server, clients, updates, settings=con.settings)

    with pytest.raises(SecAggProtocolError, match="request for round 4, but round 5 has begun"):
        clients[con.names[0]].handle({Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: 4})


def test_client_refuses_rounds_below_its_first_round_after_a_restart():
    con = Consortium(3, c=0)
    client = con.client(con.names[0], first_round=6)

    with pytest.raises(SecAggProtocolError, match="below this hospital's first allowed round 6"):
        client.handle(con.server(round_number=5).requests()[con.names[0]], settings=con.settings)


def test_one_client_per_run_makes_fresh_keys_and_masks_every_round():
    con, clients, first, updates = _setup(4, 3)
    _, transcript_1 = run_round(first, clients, updates, settings=con.settings)

    result, transcript_2 = run_round(con.server(round_number=2), clients, updates,
                                     settings=con.settings)

    np.testing.assert_array_equal(result.total, plain_sum(updates, con.names))
    for name in con.names:
        keys_1 = transcript_1[(Stage.ADVERTISE_KEYS, name)][Key.MASK_PUBLIC_KEY]
        keys_2 = transcript_2[(Stage.ADVERTISE_KEYS, name)][Key.MASK_PUBLIC_KEY]
        round_1 = np.frombuffer(transcript_1[(Stage.MASKED_INPUT, name)][Key.MASKED_INPUT], "<u8")
        round_2 = np.frombuffer(transcript_2[(Stage.MASKED_INPUT, name)][Key.MASKED_INPUT], "<u8")
        assert keys_1 != keys_2 and np.count_nonzero(round_1 == round_2) == 0


def test_server_skips_advertise_keys_for_hospitals_whose_signed_keys_it_already_holds():
    # The glue may carry round r+1's advertise-keys on round r's unmask message.
    con, clients, _, updates = _setup(4, 3)
    early = con.server(round_number=2)
    ads = {}
    for name, request in early.requests().items():
        reply = clients[name].handle(request, settings=con.settings)
        early.receive(name, reply)
        ads[name] = early.advertisement(name)

    server = con.server(round_number=2, advertisements=ads)

    assert server.stage == Stage.SHARE_KEYS
    result, _ = run_round(server, clients, updates, settings=con.settings)
    np.testing.assert_array_equal(result.total, plain_sum(updates, con.names))


class _RecordBackedClient:
    """A client rebuilt from its record for every message, as the Flower glue keeps it."""

    def __init__(self, con, name):
        self.con, self.record = con, con.client(name).to_record()
        self.key = con.signing_keys[name]

    def handle(self, request, *, quantized=None, settings=None):
        client = SecAggClient.from_record(self.record, roster=self.con.roster,
                                          signing_key=self.key)
        try:
            return client.handle(request, quantized=quantized, settings=settings)
        finally:
            self.record = client.to_record()


def test_protocol_works_when_clients_are_rebuilt_from_records_between_stages():
    con, _, server, updates = _setup(5, 4)
    clients = {name: _RecordBackedClient(con, name) for name in con.names}

    result, _ = run_round(server, clients, updates, settings=con.settings,
                          drop={Stage.MASKED_INPUT: [con.names[2]]})

    survivors = [name for name in con.names if name != con.names[2]]
    np.testing.assert_array_equal(result.total, plain_sum(updates, survivors))


def test_client_from_record_rejects_incomplete_state_and_another_roster():
    con = Consortium(3, c=0)
    record = con.client(con.names[0]).to_record()
    other = Consortium(3, c=0)

    with pytest.raises(SecAggProtocolError, match="made under another roster"):
        SecAggClient.from_record(record, roster=other.roster,
                                 signing_key=other.signing_keys[other.names[0]])
    del record["mask-key"]
    with pytest.raises(SecAggProtocolError, match="client state field 'mask-key' is invalid"):
        SecAggClient.from_record(record, roster=con.roster,
                                 signing_key=con.signing_keys[con.names[0]])


def test_client_refuses_a_signing_key_the_roster_does_not_pin_for_it():
    con = Consortium(3, c=0)

    with pytest.raises(ValueError, match="not the one the roster pins for 'hospital-a'"):
        SecAggClient(con.names[0], roster=con.roster, signing_key=con.signing_keys[con.names[1]],
                     run_id="r")


def test_client_state_repr_never_shows_key_material():
    con, clients, server, _ = _setup(3, 2, c=0)
    name = con.names[0]
    server.receive(name, clients[name].handle(server.requests()[name], settings=con.settings))
    state = clients[name].state

    text = repr(state)

    assert state.mask_key and state.mask_key.hex() not in text and repr(state.mask_key) not in text
    assert repr(state.encryption_key) not in text and repr(state.self_seed) not in text
