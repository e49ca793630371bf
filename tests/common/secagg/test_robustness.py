"""One misbehaving hospital cannot stop the round: garbage share ciphertexts, lying unmask
shares, a malformed input, a bad signature or another's identity get it excluded (or its shares
discarded), and the unmasked sum is exactly the plain sum of the updates it should hold. Any
malformed message raises SecAggProtocolError, never another exception.
"""

import logging
import os

import numpy as np
import pytest
from secagg_harness import Consortium, plain_sum, random_updates, run_round

import common.secagg.client_protocol as client_protocol
from common.errors import SecAggProtocolError
from common.secagg.protocol import Key, Stage
from common.secagg.shamir import SHARE_BYTES, split_secret


def _round(n=5, c=1, threshold=4, seed=0):
    con = Consortium(n, c=c, threshold=threshold)
    return con, con.clients(), con.server(), random_updates(con.names,
                                                              np.random.default_rng(seed))


def _others(con, *bad):
    return [name for name in con.names if name not in bad]


@pytest.mark.parametrize("receivers", ["all", "one"])
def test_garbage_ciphertexts_exclude_their_sender_and_the_round_completes(receivers, caplog):
    con, clients, server, updates = _round()
    bad = con.names[2]

    def garbage(direction, stage, name, payload):
        if direction == "reply" and stage == Stage.SHARE_KEYS and name == bad:
            ciphertexts = list(payload[Key.CIPHERTEXTS])
            targets = range(len(ciphertexts)) if receivers == "all" else [0]
            for i in targets:
                ciphertexts[i] = os.urandom(len(ciphertexts[i]))
            return {**payload, Key.CIPHERTEXTS: ciphertexts}
        return payload

    with caplog.at_level(logging.WARNING):
        result, _ = run_round(server, clients, updates, settings=con.settings, tamper=garbage)

    np.testing.assert_array_equal(result.total, plain_sum(updates, _others(con, bad)))
    assert result.survivors == tuple(_others(con, bad)) and bad in result.excluded
    assert f"ciphertext from {bad} failed at {con.names[0]}" in caplog.text
    assert "treated as dropped" in result.excluded[bad]


@pytest.mark.parametrize("how", ["random", "shifted"])
@pytest.mark.parametrize("secret", [Key.SELF_SEED_SHARES, Key.MASK_KEY_SHARES])
def test_lying_unmask_shares_are_discarded_and_their_sender_named(how, secret):
    # n = 6, c = 1, t = 4; one hospital drops after sharing keys (so mask-key shares are asked
    # for), one sends wrong shares at unmask. Its own masked input entered the sum before it
    # lied, so the sum is that of the five survivors, and it is named.
    con, clients, server, updates = _round(n=6, c=1, threshold=4)
    gone, liar = con.names[5], con.names[0]

    def lie(direction, stage, name, payload):
        if direction == "reply" and stage == Stage.UNMASK and name == liar:
            shares = []
            for share in payload[secret]:
                if how == "random":
                    shares.append(os.urandom(SHARE_BYTES - 1).rjust(SHARE_BYTES, b"\0"))
                else:
                    shares.append((int.from_bytes(share, "big") + 1).to_bytes(SHARE_BYTES, "big"))
            return {**payload, secret: shares}
        return payload

    result, _ = run_round(server, clients, updates, settings=con.settings,
                          drop={Stage.MASKED_INPUT: [gone]}, tamper=lie)

    np.testing.assert_array_equal(result.total, plain_sum(updates, _others(con, gone)))
    assert "do not lie on" in result.excluded[liar]
    assert result.revealed_mask_keys == (gone,)


@pytest.mark.parametrize("change", ["short", "long", "not-bytes", "bad-report"])
def test_malformed_masked_input_excludes_its_sender(change):
    con, clients, server, updates = _round()
    bad = con.names[1]

    def malform(direction, stage, name, payload):
        if direction == "reply" and stage == Stage.MASKED_INPUT and name == bad:
            value = payload[Key.MASKED_INPUT]
            if change == "short":
                return {**payload, Key.MASKED_INPUT: value[:-1]}
            if change == "long":
                return {**payload, Key.MASKED_INPUT: value + bytes(8)}
            if change == "not-bytes":
                return {**payload, Key.MASKED_INPUT: list(value)}
            return {**payload, Key.FAILED_SENDERS: [7]}
        return payload

    result, _ = run_round(server, clients, updates, settings=con.settings, tamper=malform)

    np.testing.assert_array_equal(result.total, plain_sum(updates, _others(con, bad)))
    assert bad in result.excluded and result.dropped == (bad,)


def test_a_hospital_claiming_another_identity_is_excluded():
    con, clients, server, updates = _round()
    bad, claimed = con.names[3], con.names[0]

    def impersonate(direction, stage, name, payload):
        if direction == "reply" and stage == Stage.ADVERTISE_KEYS and name == bad:
            return {**payload, Key.HOSPITAL: claimed}
        return payload

    result, _ = run_round(server, clients, updates, settings=con.settings, tamper=impersonate)

    np.testing.assert_array_equal(result.total, plain_sum(updates, _others(con, bad)))
    assert f"claims to be '{claimed}'" in result.excluded[bad]


def test_a_bad_key_signature_is_excluded_before_anyone_refuses():
    # The server checks the relayed signatures itself, so one hospital's bad signature cannot
    # make every honest peer refuse the round.
    con, clients, server, updates = _round()
    bad = con.names[4]

    def corrupt(direction, stage, name, payload):
        if direction == "reply" and stage == Stage.ADVERTISE_KEYS and name == bad:
            signature = payload[Key.KEY_SIGNATURE]
            return {**payload, Key.KEY_SIGNATURE: signature[:-1] + bytes([signature[-1] ^ 1])}
        return payload

    result, _ = run_round(server, clients, updates, settings=con.settings, tamper=corrupt)

    np.testing.assert_array_equal(result.total, plain_sum(updates, _others(con, bad)))
    assert "does not verify against its roster key" in result.excluded[bad]


def test_a_bad_survivor_signature_is_not_counted_and_the_round_completes():
    con, clients, server, updates = _round(n=6, c=1, threshold=4)
    bad = con.names[2]

    def corrupt(direction, stage, name, payload):
        if direction == "reply" and stage == Stage.CONSISTENCY_CHECK and name == bad:
            return {**payload, Key.SURVIVOR_SIGNATURE: os.urandom(64)}
        return payload

    result, _ = run_round(server, clients, updates, settings=con.settings, tamper=corrupt)

    # its masked input is in U3 (signed by the others), so it is in the sum
    np.testing.assert_array_equal(result.total, plain_sum(updates, con.names))
    assert "survivor-set signature" in result.excluded[bad]


def test_a_false_reporter_excludes_at_most_one_peer_and_one_reporting_everyone_excludes_itself():
    con, clients, server, updates = _round(n=6, c=1, threshold=4)
    liar, framed = con.names[0], con.names[1]

    def report(who):
        def tamper(direction, stage, name, payload):
            if direction == "reply" and stage == Stage.MASKED_INPUT and name == liar:
                return {**payload, Key.FAILED_SENDERS: who}
            return payload
        return tamper

    one, _ = run_round(server, clients, updates, settings=con.settings, tamper=report([framed]))
    server = con.server(round_number=2)
    everyone, _ = run_round(server, clients, updates, settings=con.settings,
                            tamper=report(con.names[1:]))

    np.testing.assert_array_equal(one.total, plain_sum(updates, _others(con, framed)))
    np.testing.assert_array_equal(everyone.total, plain_sum(updates, _others(con, liar)))
    assert "more than max(c, 1) = 1" in everyone.excluded[liar]


class _BadDealer:
    """A hospital that deals shares of one secret from two different polynomials."""

    def __init__(self, client, which):
        self.client, self.which = client, which

    def handle(self, request, **kwargs):
        if request.get(Key.STAGE) != Stage.SHARE_KEYS:
            return self.client.handle(request, **kwargs)
        real, calls = client_protocol.split_secret, []

        def split(secret, **options):
            calls.append(secret)
            shares = real(secret, **options)
            if len(calls) == self.which:  # 1: the self-mask seed, 2: the mask key
                other = real(os.urandom(32), **options)
                shares = shares[:2] + other[2:]
            return shares

        client_protocol.split_secret = split
        try:
            return self.client.handle(request, **kwargs)
        finally:
            client_protocol.split_secret = real


def test_a_dropped_dealer_of_inconsistent_mask_key_shares_cannot_stop_the_round():
    con, clients, server, updates = _round(n=6, c=1, threshold=4)
    dealer = con.names[3]
    clients[dealer] = _BadDealer(clients[dealer], which=2)

    result, _ = run_round(server, clients, updates, settings=con.settings,
                          drop={Stage.MASKED_INPUT: [dealer]})

    np.testing.assert_array_equal(result.total, plain_sum(updates, _others(con, dealer)))
    assert result.revealed_mask_keys == ()  # its masks went with the survivors' pair keys


def test_a_dealer_of_inconsistent_seed_shares_is_named_and_the_round_aborts():
    # Residual: without verifiable secret sharing nobody can check a seed share before the
    # masked input is in, and removing it would need the dealer's mask key too (its update).
    con, clients, server, updates = _round(n=6, c=1, threshold=4)
    dealer = con.names[3]
    clients[dealer] = _BadDealer(clients[dealer], which=1)

    with pytest.raises(SecAggProtocolError, match="shares of 'hospital-d''s self-mask seed"):
        run_round(server, clients, updates, settings=con.settings)


def _mutations(payload, rng):
    """Ways to break one field of a payload: drop, retype, truncate, repeat, garble."""
    key = list(payload)[int(rng.integers(len(payload)))]
    value = payload[key]
    choices = [
        None, 3, -1, True, "x", b"\x00", [], [1, 2], ["a", "a"], [b"x"], 2.5,
        value[:-1] if isinstance(value, (bytes, list)) else value,
        value * 2 if isinstance(value, (bytes, list)) else value,
    ]
    mutated = dict(payload)
    pick = choices[int(rng.integers(len(choices)))]
    if pick is None:
        del mutated[key]
    else:
        mutated[key] = pick
    return mutated


@pytest.mark.parametrize("seed", range(6))
def test_malformed_messages_raise_only_secagg_protocol_errors(seed):
    # Every request a client gets and every reply the server gets is mutated once, at random;
    # whatever breaks must break as SecAggProtocolError (the glue catches only that).
    rng = np.random.default_rng(seed)
    con, clients, server, updates = _round(n=5, c=1, threshold=4, seed=seed)
    while server.stage is not None:
        for name, request in server.requests().items():
            mutated = _mutations(request, rng) if rng.random() < 0.3 else request
            try:
                reply = clients[name].handle(mutated, quantized=updates[name],
                                             settings=con.settings)
            except SecAggProtocolError:
                continue
            if rng.random() < 0.3:
                reply = _mutations(reply, rng)
            try:
                server.receive(name, reply)
            except SecAggProtocolError:
                continue
        try:
            server.close_stage()
        except SecAggProtocolError:
            break
    # the honest protocol used the real primitives throughout
    assert split_secret is client_protocol.split_secret
