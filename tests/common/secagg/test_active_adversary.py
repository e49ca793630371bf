"""A server that deviates, driving the real client state machines: substituted keys, Sybil peers,
another roster, different settings for different hospitals, two survivor sets, and a second
unmasking. Each time the honest hospitals refuse, and the recovery the server attempts with what
it collected (and what a colluding hospital gives it) misses the victim's update.
"""

import os

import numpy as np
import pytest
from secagg_harness import Consortium, random_updates, run_round

from common.errors import SecAggProtocolError
from common.secagg import key_agreement as ka
from common.secagg import signatures as sig
from common.secagg.mask_stream import expand_mask
from common.secagg.masking import pairwise_sign, self_mask_key
from common.secagg.protocol import Key, SecAggClient, Stage, make_signing_key
from common.secagg.roster import Roster, load_signing_key
from common.secagg.shamir import combine_shares

ROUND = 1


def _drive(server, clients, updates, settings, *, until):
    """Run the honest protocol until the server reaches stage ``until``; return the replies."""
    transcript = {}
    while server.stage != until:
        stage = server.stage
        for name, request in server.requests().items():
            reply = clients[name].handle(request, quantized=updates[name], settings=settings)
            transcript[(stage, name)] = reply
            server.receive(name, reply)
        server.close_stage()
    return transcript


def _refusals(clients, requests, **kwargs):
    """Deliver each request; return name -> the refusal's reason (None if it answered)."""
    out = {}
    for name, request in requests.items():
        try:
            clients[name].handle(request, **kwargs)
            out[name] = None
        except SecAggProtocolError as error:
            out[name] = error.reason
    return out


def _advertisements(con, clients, settings_of):
    """The advertise-keys replies, each hospital asked with the digest of its own settings."""
    replies = {}
    for name in con.names:
        request = {Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: ROUND, Key.RUN_ID: con.run_id,
                   Key.ROSTER_DIGEST: con.roster.digest,
                   Key.SETTINGS_DIGEST: settings_of(name).digest()}
        replies[name] = clients[name].handle(request, settings=settings_of(name))
    return replies


def _share_keys_request(names, ads, threshold):
    return {
        Key.STAGE: Stage.SHARE_KEYS, Key.ROUND: ROUND, Key.THRESHOLD: threshold,
        Key.HOSPITALS: list(names),
        Key.MASK_PUBLIC_KEYS: [ads[name][Key.MASK_PUBLIC_KEY] for name in names],
        Key.ENCRYPTION_PUBLIC_KEYS: [ads[name][Key.ENCRYPTION_PUBLIC_KEY] for name in names],
        Key.SEED_COMMITMENTS: [ads[name][Key.SEED_COMMITMENT] for name in names],
        Key.SETTINGS_DIGESTS: [ads[name][Key.SETTINGS_DIGEST] for name in names],
        Key.KEY_SIGNATURES: [ads[name][Key.KEY_SIGNATURE] for name in names],
    }


def _server_guess(con, victim, masked, *, seed=None, known_pair_keys=()):
    """What the server can strip off the victim's masked vector: its self mask, if it rebuilt
    the seed, and the pairwise masks it knows (a colluder's, or rebuilt ones).
    """
    guess = masked.copy()
    me = con.roster.index(victim)
    if seed is not None:
        np.subtract(guess, expand_mask(self_mask_key(seed, round_number=ROUND, owner_id=me),
                                       guess.size), out=guess)
    for peer, key in known_pair_keys:
        mask = expand_mask(key, guess.size)
        if pairwise_sign(me, con.roster.index(peer)) > 0:
            np.subtract(guess, mask, out=guess)
        else:
            np.add(guess, mask, out=guess)
    return guess


def _colluder_pair_key(con, clients, colluder, victim):
    state = clients[colluder].state
    peers = [peer for peer in state.masked_with if peer != colluder]
    return state.pair_keys[peers.index(victim)]


@pytest.mark.parametrize("signature", ["victim's", "server's own"])
def test_substituted_keys_are_refused_by_every_honest_hospital(signature):
    # Arrange: the server replaces the victim's keys, as relayed to every other hospital, with
    # X25519 keys of its own (keeping the victim's signature, or signing with a key of its own)
    con = Consortium(5, c=1)
    clients = con.clients()
    ads = _advertisements(con, clients, lambda name: con.settings)
    victim = con.names[0]
    server_mask, server_enc = ka.generate_private_key(), ka.generate_private_key()
    forged = {**ads[victim], Key.MASK_PUBLIC_KEY: ka.public_key_bytes(server_mask),
              Key.ENCRYPTION_PUBLIC_KEY: ka.public_key_bytes(server_enc)}
    if signature == "server's own":
        own_key = load_signing_key(make_signing_key().private_pem)
        forged[Key.KEY_SIGNATURE] = sig.sign(own_key, sig.advertisement_message(
            roster_digest=con.roster.digest, run_id=con.run_id, round_number=ROUND, name=victim,
            mask_public_key=forged[Key.MASK_PUBLIC_KEY],
            encryption_public_key=forged[Key.ENCRYPTION_PUBLIC_KEY],
            settings_digest=con.settings.digest(), seed_commitment=forged[Key.SEED_COMMITMENT]))
    seen = {**ads, victim: forged}
    # the victim is shown a peer's keys substituted the same way
    seen_by_victim = {**ads, con.names[1]: {**ads[con.names[1]],
                                            Key.MASK_PUBLIC_KEY: ka.public_key_bytes(server_mask)}}
    requests = {name: _share_keys_request(con.names, seen, 4) for name in con.names[1:]}
    requests[victim] = _share_keys_request(con.names, seen_by_victim, 4)

    # Act
    refusals = _refusals(clients, requests)

    # Assert: every hospital refuses before making or encrypting a single share, so the server
    # has no ciphertext to open with its substituted private keys and no masked input to strip
    assert all("are not signed by its pinned roster key" in reason
               for reason in refusals.values()), refusals
    assert "'hospital-b' are not signed" in refusals[victim]
    assert all(client.state.share_owners == [] for client in clients.values())
    assert all(client.state.mask_key == b"" for client in clients.values())  # fail closed


def test_threshold_below_the_active_rule_is_refused_before_any_share_is_made():
    # n = 5, c = 1: t = 3 <= (n + c)/2 would let an equivocating server plus one colluder
    # collect t shares of the victim's seed and t of its mask key
    con = Consortium(5, c=1, threshold=3, min_threshold=2)
    clients = con.clients()
    ads = _advertisements(con, clients, lambda name: con.settings)

    refusals = _refusals(clients, {name: _share_keys_request(con.names, ads, 3)
                                   for name in con.names})

    assert all("t=3 must be >= floor((n + c)/2) + 1 = 4 (n=5, c=1)" in reason
               for reason in refusals.values()), refusals
    assert all(client.state.share_owners == [] for client in clients.values())
    with pytest.raises(ValueError, match="floor"):  # an honest server will not even start
        con.server()


def test_two_survivor_sets_get_no_share_revealed_with_one_colluder():
    # Arrange: n = 5, c = 1, t = 4; everyone has masked. The server tells {victim, a2} the victim
    # survived and {b1, b2} it dropped; the colluder signs both stories.
    con = Consortium(5, c=1, threshold=4)
    victim, a2, b1, b2, colluder = con.names
    clients = con.clients()
    updates = random_updates(con.names, np.random.default_rng(3))
    server = con.server()
    transcript = _drive(server, clients, updates, con.settings, until=Stage.CONSISTENCY_CHECK)
    stories = {"survived": (list(con.names), []),
               "dropped": ([name for name in con.names if name != victim], [victim])}
    told = {victim: "survived", a2: "survived", b1: "dropped", b2: "dropped"}

    def message(story):
        survivors, dropped = stories[story]
        return sig.survivors_message(roster_digest=con.roster.digest, run_id=con.run_id,
                                     round_number=ROUND, settings_digest=con.settings.digest(),
                                     survivors=survivors, dropped=dropped)

    # Act: consistency check, then unmask with every signature the server can gather
    signatures = {story: {colluder: sig.sign(con.signing_keys[colluder], message(story))}
                  for story in stories}
    for name, story in told.items():
        survivors, dropped = stories[story]
        reply = clients[name].handle({Key.STAGE: Stage.CONSISTENCY_CHECK, Key.ROUND: ROUND,
                                      Key.SURVIVORS: survivors, Key.DROPPED: dropped})
        signatures[story][name] = reply[Key.SURVIVOR_SIGNATURE]
    # a hospital that signed one story will not sign the other
    with pytest.raises(SecAggProtocolError, match="signs one survivor set per round"):
        clients[b1].handle({Key.STAGE: Stage.CONSISTENCY_CHECK, Key.ROUND: ROUND,
                            Key.SURVIVORS: stories["survived"][0], Key.DROPPED: []})
    unmask = {}
    for name, story in told.items():
        if name == b1:
            continue
        survivors, dropped = stories[story]
        signers = con.roster.in_roster_order(signatures[story])
        unmask[name] = {Key.STAGE: Stage.UNMASK, Key.ROUND: ROUND, Key.SURVIVORS: survivors,
                        Key.DROPPED: dropped, Key.SIGNERS: signers,
                        Key.SURVIVOR_SIGNATURES: [signatures[story][s] for s in signers]}
    # padding a story with the other story's signatures does not help either (shown to a2)
    padded = dict(unmask.pop(a2))
    padded[Key.SIGNERS] = con.roster.in_roster_order([*padded[Key.SIGNERS], b2])
    padded[Key.SURVIVOR_SIGNATURES] = [
        {**signatures["survived"], b2: signatures["dropped"][b2]}[s] for s in padded[Key.SIGNERS]
    ]
    padded_refusal = _refusals(clients, {a2: padded})
    refusals = _refusals(clients, unmask)

    # Assert: nobody revealed a share
    assert all("only 3 hospitals signed this survivor set, t=4" in reason
               for reason in refusals.values()), refusals
    assert "signature of 'hospital-d' over the survivor set does not verify" in padded_refusal[a2]
    # The server's recovery: with only the colluder's shares (1 < t of each secret) it cannot
    # rebuild the victim's seed or mask key, and what it can strip off is not the update.
    seed_share, key_share = clients[colluder].state.shares_of(victim)
    x = con.roster.index(colluder)
    for share in (seed_share, key_share):
        with pytest.raises(ValueError, match="too few shares"):
            combine_shares([(x, share)], threshold=4)
    masked = np.frombuffer(transcript[(Stage.MASKED_INPUT, victim)][Key.MASKED_INPUT], "<u8")
    guess = _server_guess(con, victim, masked.astype(np.uint64), known_pair_keys=[
        (colluder, _colluder_pair_key(con, clients, colluder, victim))])
    assert np.count_nonzero(guess == updates[victim]) == 0


def test_different_settings_told_to_different_hospitals_are_refused():
    # Arrange: the server shows two hospitals a noise multiplier of 0.3, three others 1.1; each
    # hospital's glue accepted its own story, and signed its digest
    con = Consortium(5, c=1)
    clients = con.clients()
    weak = con.with_settings(noise_multiplier=0.3)
    settings_of = {name: (weak if name in con.names[:2] else con.settings) for name in con.names}
    ads = _advertisements(con, clients, settings_of.get)

    # Act: relayed as signed, and relayed with the digests made to agree
    refusals = _refusals(clients, {name: _share_keys_request(con.names, ads, 4)
                                   for name in con.names})
    clients = con.clients()
    ads = _advertisements(con, clients, settings_of.get)
    request = _share_keys_request(con.names, ads, 4)
    request[Key.SETTINGS_DIGESTS] = [con.settings.digest()] * 5
    relabelled = _refusals(clients, {name: request for name in con.names[2:]})

    # Assert
    assert all("the server showed the hospitals different settings; refused" in reason
               for reason in refusals.values()), refusals
    assert all("not signed by its pinned roster key" in reason
               for reason in relabelled.values()), relabelled
    assert all(client.state.share_owners == [] for client in clients.values())


def test_server_advertise_request_with_other_settings_or_roster_is_refused():
    con = Consortium(5, c=1)
    client = con.client(con.names[0])
    request = {Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: ROUND, Key.RUN_ID: con.run_id,
               Key.ROSTER_DIGEST: con.roster.digest, Key.SETTINGS_DIGEST: os.urandom(32)}

    with pytest.raises(SecAggProtocolError, match="differs from that of the settings this"):
        client.handle(request, settings=con.settings)
    client = con.client(con.names[0])
    request.update({Key.SETTINGS_DIGEST: con.settings.digest(), Key.ROSTER_DIGEST: bytes(32)})
    with pytest.raises(SecAggProtocolError, match="is not this hospital's pinned roster"):
        client.handle(request, settings=con.settings)
    assert client.state.mask_key == b""  # nothing was generated, nothing advertised


def test_a_peer_not_on_the_roster_is_refused():
    # Arrange: the server adds a Sybil hospital of its own, with keys it signed itself
    con = Consortium(4, c=1, threshold=4)
    sybil = Consortium(5, c=1, threshold=4, prefix="hospital")  # same names, other keys
    mallory_roster = Consortium(5, c=1, threshold=4, prefix="mallory")
    clients = con.clients()
    ads = _advertisements(con, clients, lambda name: con.settings)
    strangers = mallory_roster.clients()
    mallory = mallory_roster.names[0]
    mallory_ad = _advertisements(mallory_roster, strangers, lambda n: con.settings)[mallory]

    # Act
    with_sybil = _refusals(clients, {
        name: _share_keys_request(con.names + [mallory], {**ads, mallory: mallory_ad}, 4)
        for name in con.names})
    clients = con.clients()
    ads = _advertisements(con, clients, lambda name: con.settings)
    # ... or the Sybil claims a roster name (hospital-e is not on a 4-hospital roster) or an
    # existing one with its own key
    impostor = _advertisements(sybil, sybil.clients(), lambda n: con.settings)[con.names[3]]
    impersonated = _refusals(
        {name: clients[name] for name in con.names[:3]},
        {name: _share_keys_request(con.names, {**ads, con.names[3]: impostor}, 4)
         for name in con.names[:3]})

    # Assert
    assert all("hospital 'mallory-a' is not on this hospital's pinned roster" in reason
               for reason in with_sybil.values()), with_sybil
    assert all("'hospital-d' are not signed by its pinned roster key" in reason
               for reason in impersonated.values()), impersonated


def test_a_hospital_holding_another_roster_is_refused_by_its_peers():
    # The server gave hospital-a a roster with another c; its signatures bind that roster's
    # digest, which no peer holding the consortium's roster accepts.
    con = Consortium(5, c=1)
    other = Roster(con.roster.names, con.roster.signing_keys, 0, 3)
    clients = con.clients()
    first = con.names[0]
    clients[first] = SecAggClient(first, roster=other, signing_key=con.signing_keys[first],
                                  run_id=con.run_id)
    replies = {}
    for name in con.names:
        roster = other if name == first else con.roster
        request = {Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: ROUND, Key.RUN_ID: con.run_id,
                   Key.ROSTER_DIGEST: roster.digest, Key.SETTINGS_DIGEST: con.settings.digest()}
        replies[name] = clients[name].handle(request, settings=con.settings)

    refusals = _refusals(clients, {name: _share_keys_request(con.names, replies, 4)
                                   for name in con.names})

    assert all("'hospital-a' are not signed by its pinned roster key" in refusals[name]
               for name in con.names[1:]), refusals
    assert "are not signed by its pinned roster key" in refusals[first]


def test_a_second_unmasking_over_another_survivor_set_is_declined():
    # Arrange: an honest round completes (the server learns the sum of all five) ...
    con = Consortium(5, c=1, threshold=4)
    victim, colluder = con.names[0], con.names[4]
    clients = con.clients()
    updates = random_updates(con.names, np.random.default_rng(5))
    server = con.server()
    first, transcript = run_round(server, clients, updates, settings=con.settings)
    honest = con.names[1:4]
    survivors, dropped = [name for name in con.names if name != victim], [victim]
    again = sig.survivors_message(roster_digest=con.roster.digest, run_id=con.run_id,
                                  round_number=ROUND, settings_digest=con.settings.digest(),
                                  survivors=survivors, dropped=dropped)
    colluder_signature = sig.sign(con.signing_keys[colluder], again)

    # Act: ... then it asks to sign, and to unmask, a set without the victim
    check = _refusals(clients, {name: {Key.STAGE: Stage.CONSISTENCY_CHECK, Key.ROUND: ROUND,
                                       Key.SURVIVORS: survivors, Key.DROPPED: dropped}
                                for name in honest})
    unmask = _refusals(clients, {name: {Key.STAGE: Stage.UNMASK, Key.ROUND: ROUND,
                                        Key.SURVIVORS: survivors, Key.DROPPED: dropped,
                                        Key.SIGNERS: [colluder],
                                        Key.SURVIVOR_SIGNATURES: [colluder_signature]}
                                 for name in honest})

    # Assert
    assert all("signs one survivor set per round" in reason for reason in check.values())
    assert all("round 1 failed at this hospital" in reason for reason in unmask.values())
    # The server's recovery: it rebuilt the victim's seed legitimately in the first unmasking,
    # but of the victim's mask key it holds only the colluder's share, so the victim's pairwise
    # masks with the three honest hospitals stay on.
    seed_shares = [
        (con.roster.index(name), transcript[(Stage.UNMASK, name)][Key.SELF_SEED_SHARES][0])
        for name in con.names[:4]
    ]
    seed = combine_shares(seed_shares, threshold=4)
    masked = np.frombuffer(transcript[(Stage.MASKED_INPUT, victim)][Key.MASKED_INPUT], "<u8")
    guess = _server_guess(con, victim, masked.astype(np.uint64), seed=seed, known_pair_keys=[
        (colluder, _colluder_pair_key(con, clients, colluder, victim))])
    assert np.count_nonzero(guess == updates[victim]) == 0
    assert first.survivors == tuple(con.names)


def test_an_identical_repeat_of_unmask_gets_the_identical_reply_and_another_set_is_declined():
    con = Consortium(5, c=1, threshold=4)
    clients = con.clients()
    updates = random_updates(con.names, np.random.default_rng(9))
    server = con.server()
    _drive(server, clients, updates, con.settings, until=Stage.UNMASK)
    requests = server.requests()
    name = con.names[1]

    first = clients[name].handle(requests[name])
    repeat = clients[name].handle(requests[name])
    other = {**requests[name], Key.SURVIVORS: con.names[1:], Key.DROPPED: con.names[:1]}

    assert repeat == first
    with pytest.raises(SecAggProtocolError, match="declined: this hospital signed survivors"):
        clients[name].handle(other)
    with pytest.raises(SecAggProtocolError, match="answers no further stage"):
        clients[name].handle(requests[name])  # after a refusal, fail closed


def test_a_rerun_of_a_round_is_refused_by_the_same_client():
    con = Consortium(4, c=1, threshold=3)
    clients = con.clients()
    updates = random_updates(con.names, np.random.default_rng(1))
    run_round(con.server(), clients, updates, settings=con.settings)

    refusals = _refusals(clients, con.server().requests(), settings=con.settings)

    assert all("round 1 expects no further stage" in reason for reason in refusals.values())
