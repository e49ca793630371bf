"""A release belongs to the request it was made for; check, then draw, then save, charge, send.

Crafted Messages into the real ClientApp, as a deviating server would send them: a secure
round's release asked again in the clear or in a second secure run, requests that differ from
their round's saved release, t, h or the hospital count outside the pinned roster's rules,
two concurrent requests with different weights, and out-of-range settings values.
"""

import hashlib
import json
import math
import threading
from dataclasses import fields, replace
from enum import Enum

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from opacus.accountants import RDPAccountant

from client.app import build_client_app
from client.privacy import HospitalPrivacy
from client.release_store import SHAPING_FIELDS, ReleaseKey, release_key
from client.training import get_trainer
from common.config import RunConfig
from common.dp.disclosure_log import ANCHOR_KEY as DISCLOSURE_ANCHOR_KEY
from common.dp.ledger import PrivacyLedger
from common.models import build_model
from common.secagg.protocol import Key, Stage
from common.secagg.roster import build_roster, make_signing_key
from common.secagg.round_settings import signed_settings
from common.tasks import get_task
from common.wire.records import pack_request
from common.wire.replies import DeclinedReply, TrainReply
from common.wire.settings import FIELD_KEYS, RoundSettings
from server.federation import round_settings
from tests.wire_messages import context_for, reply_from, request_message

TASK = get_task("heart-disease")
WEIGHTS = build_model(TASK, seed=0).get_weights()
D = sum(int(w.size) for w in WEIGHTS)
NAMES = TASK.hospital_names(4)
ME = "va"  # partition 3
BUDGET = 3.0
# Distributed noise with c = 1 (the roster's): t = 3 of n = 4, h = t - c = 2.
SECURE_RUN = {"dp.mode": "hospital", "dp.noise-mode": "distributed", "secagg.enabled": True,
              "secagg.honest-contributors": 2, "num-server-rounds": 4, "local-steps": 2}
PLAIN_RUN = {"dp.mode": "hospital", "num-server-rounds": 4, "local-steps": 2}
NUMERIC = [name for name, kind in ((f.name, f.type) for f in fields(RoundSettings))
           if kind in (int, float, "int", "float")]


@pytest.fixture(autouse=True)
def fedcare_home(tmp_path, monkeypatch):
    home = tmp_path / "hospital-home"
    monkeypatch.setenv("FEDCARE_HOME", str(home))
    return home


class Hospital:
    """Hospital va: its ledger (budget init'ed, head apart), pinned roster and signing key."""

    def __init__(self, tmp_path, *, roster_names=NAMES, colluders=1, min_threshold=3):
        self.ledger = tmp_path / "va-disk" / "ledgers" / "va.json"
        self.head = tmp_path / "va-other-volume" / "va.head"
        PrivacyLedger.create(self.ledger, hospital=ME, budget_epsilon=BUDGET,
                             budget_delta=1e-5, head_path=self.head)
        pairs = {name: make_signing_key() for name in roster_names}
        self.roster = build_roster(list(roster_names), [p.public_key for p in pairs.values()],
                                   c=colluders, min_threshold=min_threshold)
        roster_path, key_path = tmp_path / "roster.json", tmp_path / "va.key"
        roster_path.write_bytes(self.roster.to_bytes())
        key_path.write_bytes(pairs[ME].private_pem)
        self.node = {"partition-id": 3, "num-partitions": 4, "dp-mode": "hospital",
                     "ledger-path": str(self.ledger), "ledger-head-path": str(self.head),
                     "roster-path": str(roster_path),
                     "roster-sha256": hashlib.sha256(roster_path.read_bytes()).hexdigest(),
                     "signing-key-path": str(key_path)}
        self.state = RecordDict()  # the node's Context.state, kept between messages
        self.app = build_client_app()

    def ask(self, message, run_config, *, state=None):
        context = context_for(self.node, RunConfig.from_run_config(run_config).to_run_config(),
                              state=self.state if state is None else state)
        reply = self.app(message=message, context=context)
        return reply_from(reply), reply

    def train(self, settings, weights=WEIGHTS, run_config=PLAIN_RUN):
        return self.ask(request_message(settings, weights), run_config)

    def advertise(self, settings, weights=WEIGHTS, *, state=None, **overrides):
        return self.ask(request_message(settings, weights, "train.secagg_advertise",
                                        secagg={**self.advertise_request(settings), **overrides}),
                        SECURE_RUN, state=state)

    def advertise_request(self, settings):
        return {Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: settings.server_round,
                Key.RUN_ID: settings.run_id, Key.ROSTER_DIGEST: self.roster.digest,
                Key.SETTINGS_DIGEST: signed_settings(settings, D).digest()}

    def disk(self):
        """Everything on the hospital's disk a release may change: ledger, head, releases.

        The head's disclosure-log anchor is left out: every request, a decline too, is
        recorded in the disclosure log (``common.dp.disclosure_log``), whose chain head the
        head file carries under ``"log"``; a decline changes only that record.
        """
        files = [self.ledger, *sorted(self.ledger.parent.rglob("*.npz"))]
        state = {str(f): f.read_bytes() for f in files}
        head = json.loads(self.head.read_text())
        head.pop(DISCLOSURE_ANCHOR_KEY, None)
        state[str(self.head)] = json.dumps(head, sort_keys=True).encode()
        return state

    def entries(self):
        return PrivacyLedger.read(self.ledger, head_path=self.head).entries


def _settings(run_config, server_round=1, run_id="run-1"):
    return round_settings(RunConfig.from_run_config(run_config), run_id, server_round)


def _opacus_epsilon(hospital, level="hospital"):
    data = json.loads(hospital.ledger.read_text())
    accountant = RDPAccountant()
    for entry in data["entries"]:
        if entry["level"] == level or level == "patient":
            for _ in range(entry["steps"]):
                accountant.step(noise_multiplier=entry["noise_multiplier"],
                                sample_rate=entry["sample_rate"])
    return accountant.get_epsilon(delta=data["budget"]["delta"])


@pytest.fixture
def no_draw(monkeypatch):
    """Count the noise generators the hospital makes (every noise draw needs one)."""
    made = []
    original = HospitalPrivacy.noise_rng

    def counting(self, **kwargs):
        made.append(kwargs)
        return original(self, **kwargs)

    monkeypatch.setattr(HospitalPrivacy, "noise_rng", counting)
    return made


def _has_no_update(raw_reply):
    return "arrays" not in raw_reply.content


# -- the replay: a secure round's release asked again ----------------------------------------

def test_a_secure_rounds_release_is_never_sent_in_the_clear(tmp_path):
    hospital = Hospital(tmp_path)
    secure = _settings(SECURE_RUN)
    first, _ = hospital.advertise(secure)
    assert isinstance(first, TrainReply) and first.secagg is not None and first.update is None
    assert first.privacy.epsilon_hospital == pytest.approx(_opacus_epsilon(hospital), rel=1e-9)
    before = hospital.disk()

    # The same run, round and weights, as a plain round with local noise and no secure sum.
    reply, raw = hospital.train(_settings(PLAIN_RUN))

    assert isinstance(reply, DeclinedReply) and _has_no_update(raw)
    assert reply.reason.startswith("round 1 of run run-1 is already charged for a release made "
                                   "for another request")
    assert ("secure aggregation (the release was made for a secure round, masked and carrying "
            "its noise share; this request would send it in the clear)") in reply.reason
    assert "noise mode (made for 'distributed', asked 'local')" in reply.reason
    assert hospital.disk() == before and len(hospital.entries()) == 1


@pytest.mark.parametrize("node", ["same node", "restarted node"])
def test_a_second_secure_run_of_a_round_is_declined(tmp_path, node):
    hospital = Hospital(tmp_path)
    secure = _settings(SECURE_RUN)
    assert isinstance(hospital.advertise(secure)[0], TrainReply)
    before = hospital.disk()

    # Another protocol instance of round 1 (new keys, so another survivor set); a restarted
    # SuperNode has lost its in-memory protocol state, so only the release store remembers.
    reply, raw = hospital.advertise(secure, state=RecordDict() if node != "same node" else None)

    assert isinstance(reply, DeclinedReply) and _has_no_update(raw)
    assert ("round 1 of run run-1 was already released into a secure aggregation; a saved "
            "release is never put into a second one") in reply.reason
    assert hospital.disk() == before and len(hospital.entries()) == 1


def test_an_identical_local_mode_request_gets_the_identical_saved_release(tmp_path):
    hospital = Hospital(tmp_path)
    plain = _settings(PLAIN_RUN)
    first, _ = hospital.train(plain)
    # Asked again (a resumed server), also evaluating the weights it sends: not keyed.
    again, _ = hospital.train(replace(plain, evaluate_received=True))

    assert isinstance(first, TrainReply) and isinstance(again, TrainReply)
    for a, b in zip(first.update, again.update, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(hospital.entries()) == 1
    assert again.privacy.epsilon_hospital == first.privacy.epsilon_hospital
    assert first.privacy.epsilon_hospital == pytest.approx(_opacus_epsilon(hospital), rel=1e-9)


@pytest.mark.parametrize(("change", "named"), [
    ({"clipping_norm": 0.7}, "round setting clipping-norm (made for 0.5, asked 0.7)"),
    ({"learning_rate": 0.02}, "round setting learning-rate"),
    ({"local_steps": 3}, "round setting local-steps (made for 2, asked 3)"),
    ({"batch_size": 16}, "round setting batch-size"),
    ({"seed": 7}, "round setting seed (made for 0, asked 7)"),
    ({"planned_rounds": 5}, "round setting planned-rounds (made for 4, asked 5)"),
    ({"max_noise_multiplier": 20.0}, "round setting max-noise-multiplier"),
    ({"clip_updates": True}, "round setting clip-updates"),
    ("weights", "global weights (sha256)"),
], ids=lambda value: value if isinstance(value, str) else next(iter(value), "weights"))
def test_a_request_differing_from_the_saved_release_is_declined_naming_it(tmp_path, change,
                                                                         named):
    hospital = Hospital(tmp_path)
    plain = _settings(PLAIN_RUN)
    assert isinstance(hospital.train(plain)[0], TrainReply)
    before = hospital.disk()

    if change == "weights":
        reply, raw = hospital.train(plain, [w + np.float32(0.01) for w in WEIGHTS])
    else:
        reply, raw = hospital.train(replace(plain, **change))

    assert isinstance(reply, DeclinedReply) and _has_no_update(raw)
    assert "already charged for a release made for another request" in reply.reason
    assert named in reply.reason
    assert hospital.disk() == before


def _another(value):
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, Enum):
        return next(member for member in type(value) if member != value)
    if isinstance(value, str):
        return value + "x"
    return type(value)(value + 1)


def test_every_shaping_setting_is_keyed_and_named():
    base = _settings(PLAIN_RUN)
    key = release_key(base, level="hospital", secure=False, weights=WEIGHTS)
    assert "fedcare_version" not in SHAPING_FIELDS and "evaluate_received" not in SHAPING_FIELDS
    for name in SHAPING_FIELDS:
        other = _another(getattr(base, name))
        asked = release_key(replace(base, **{name: other}), level="hospital", secure=False,
                            weights=WEIGHTS)
        assert asked != key, name
        label = {"secagg_threshold": "t (", "honest_contributors": "h (",
                 "noise_mode": "noise mode ("}.get(name, f"round setting {FIELD_KEYS[name]} (")
        assert any(item.startswith(label) for item in key.differences(asked)), name
    assert key.differences(release_key(replace(base, evaluate_received=True),
                                       level="hospital", secure=False, weights=WEIGHTS)) == []


def test_a_release_key_survives_its_json_form():
    key = release_key(_settings(SECURE_RUN), level="hospital", secure=True, weights=WEIGHTS,
                      roster_digest="ab" * 32, colluders=1)
    assert ReleaseKey.from_json(json.loads(json.dumps(key.to_json()))) == key


# -- check, then draw: t, h and the hospital count against the pinned roster -----------------

@pytest.mark.parametrize(("change", "roster", "named"), [
    ({"secagg_threshold": 100_000, "honest_contributors": 100_000}, {},
     "secagg-threshold: threshold t=100000 must be <= the number of participants n=4"),
    ({"secagg_threshold": 2, "honest_contributors": 1}, {"colluders": 0, "min_threshold": 3},
     "secagg-threshold: threshold t=2 is below the roster's smallest threshold 3"),
    ({"secagg_threshold": 3, "honest_contributors": 3}, {},
     "honest-contributors: the round divides the noise by h=3, but with t=3 and c=1 only "
     "t - c = 2"),
    ({"secagg_threshold": 4, "honest_contributors": 4}, {"colluders": 1, "min_threshold": 2},
     "honest-contributors: the round divides the noise by h=4"),
    ({}, {"roster_names": NAMES[1:], "min_threshold": 2},
     "hospitals: the round counts 4 hospitals; this hospital's pinned roster allows 3 to its 3 "
     "members"),
], ids=["t=h=100000", "t below the roster's minimum", "h above t-c", "h above t-c (t=n)",
        "more hospitals than the roster"])
def test_t_h_or_hospital_count_outside_the_roster_is_declined_before_any_draw(
        tmp_path, no_draw, change, roster, named):
    hospital = Hospital(tmp_path, **roster)
    before = hospital.disk()

    settings = replace(_settings(SECURE_RUN), **change)
    reply, raw = hospital.advertise(settings)

    assert isinstance(reply, DeclinedReply) and _has_no_update(raw)
    assert reply.reason.startswith("secure aggregation refused before any noise was drawn or "
                                   "epsilon charged")
    assert named in reply.reason
    assert no_draw == []  # not one noise generator was made
    assert hospital.disk() == before and hospital.entries() == ()
    assert not list(hospital.ledger.parent.rglob("*.npz"))


@pytest.mark.parametrize(("overrides", "named"), [
    ({Key.SETTINGS_DIGEST: b"\x00" * 32}, "settings-digest does not match"),
    ({Key.ROSTER_DIGEST: b"\x00" * 32}, "roster-digest does not match"),
    ({Key.RUN_ID: "run-2"}, "run-id does not match"),
    ({Key.ROUND: 2}, "the stage request is for round 2, the settings for round 1"),
    ({Key.STAGE: Stage.SHARE_KEYS}, "advertised no keys for round 1 under these settings"),
    ({Key.STAGE: Stage.UNMASK}, "a secure round starts with advertise-keys or share-keys"),
], ids=["settings digest", "roster digest", "run", "round", "share-keys unannounced", "unmask"])
def test_a_first_stage_the_hospital_would_refuse_is_refused_before_any_draw(
        tmp_path, no_draw, overrides, named):
    hospital = Hospital(tmp_path)
    before = hospital.disk()

    reply, raw = hospital.advertise(_settings(SECURE_RUN), **overrides)

    assert isinstance(reply, DeclinedReply) and _has_no_update(raw)
    assert named in reply.reason and no_draw == []
    assert hospital.disk() == before and hospital.entries() == ()


# -- two requests for one round at once -------------------------------------------------------

@pytest.mark.parametrize("level", ["hospital", "patient"])
def test_two_concurrent_requests_with_different_weights_release_once(tmp_path, level):
    hospital = Hospital(tmp_path)
    hospital.node = {**hospital.node, "dp-mode": level}
    run = {**PLAIN_RUN, "dp.mode": level}
    settings = _settings(run)
    start = threading.Barrier(2)
    replies = []

    def ask(weights):
        start.wait()
        replies.append(hospital.train(settings, weights, run))

    threads = [threading.Thread(target=ask, args=(weights,))
               for weights in (WEIGHTS, [w + np.float32(0.01) for w in WEIGHTS])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    kinds = sorted(type(reply).__name__ for reply, _ in replies)
    assert kinds == ["DeclinedReply", "TrainReply"]  # at most one update leaves
    declined = next(reply for reply, _ in replies if isinstance(reply, DeclinedReply))
    assert "global weights (sha256)" in declined.reason
    assert len(hospital.entries()) == 1
    assert len(list(hospital.ledger.parent.rglob("*.npz"))) == 1
    released = next(reply for reply, _ in replies if isinstance(reply, TrainReply))
    assert getattr(released.privacy, f"epsilon_{level}") == pytest.approx(
        _opacus_epsilon(hospital, level), rel=1e-9)


# -- settings out of range: a decline naming the field, never an error -------------------------

@pytest.mark.parametrize("value", [-1, math.nan, 1e300], ids=["negative", "nan", "1e300"])
@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_an_out_of_range_setting_is_a_decline_naming_the_field(tmp_path, no_draw, name,
                                                               value, secure):
    hospital = Hospital(tmp_path)
    settings = _settings(SECURE_RUN if secure else PLAIN_RUN)
    content = pack_request(settings, WEIGHTS, secagg=(hospital.advertise_request(settings)
                                                      if secure else None))
    config = dict(content["config"])
    config[FIELD_KEYS[name]] = value
    content["config"] = ConfigRecord(config)
    before = hospital.disk()

    reply, raw = hospital.ask(request_message(
        None, None, "train.secagg_advertise" if secure else "train", content=content),
        SECURE_RUN if secure else PLAIN_RUN)

    assert isinstance(reply, DeclinedReply) and _has_no_update(raw)
    assert reply.reason.startswith(f"the server's message is malformed: {FIELD_KEYS[name]}: ")
    assert no_draw == [] and hospital.disk() == before


def test_a_hospital_count_changed_mid_run_is_a_decline(tmp_path):
    hospital = Hospital(tmp_path)
    assert isinstance(hospital.train(_settings(PLAIN_RUN))[0], TrainReply)
    before = hospital.disk()

    reply, raw = hospital.train(replace(_settings(PLAIN_RUN, server_round=2), hospitals=5))

    assert isinstance(reply, DeclinedReply) and _has_no_update(raw)
    assert reply.reason.startswith("this hospital cannot take part in a round with these "
                                   "settings: the federation has 4 nodes but the run config says "
                                   "hospitals=5")
    assert hospital.disk() == before


class DivergingTrainer:
    """The real trainer, except that local training ends in non-finite weights."""

    def __init__(self, trainer):
        self._trainer = trainer
        self.model = trainer.model

    def fit(self, weights, *args, **kwargs):
        _, loss = self._trainer.fit(weights, *args, **kwargs)
        return [np.full_like(w, np.nan) for w in weights], loss

    def fit_dp_sgd(self, weights, *args, **kwargs):
        _, applied = self._trainer.fit_dp_sgd(weights, *args, **kwargs)
        return [np.full_like(w, np.inf) for w in weights], applied

    def predict(self, *args, **kwargs):
        return self._trainer.predict(*args, **kwargs)


@pytest.mark.parametrize("level", ["hospital", "patient"])
def test_a_diverged_private_round_sends_the_noised_zero_update_not_an_error(tmp_path, level):
    hospital = Hospital(tmp_path)
    hospital.node = {**hospital.node, "dp-mode": level}
    hospital.app = build_client_app(trainer_for=lambda task: DivergingTrainer(get_trainer(task)))
    run = {**PLAIN_RUN, "dp.mode": level}

    reply, raw = hospital.train(_settings(run), run_config=run)

    assert not raw.has_error() and isinstance(reply, TrainReply)
    assert all(np.all(np.isfinite(u)) for u in reply.update)
    if level == "patient":  # post-processing of DP-SGD: the zero update, clipped
        assert all(not np.any(u) for u in reply.update)
    else:  # the zero update plus the round's noise
        assert any(np.any(u) for u in reply.update)
    assert getattr(reply.privacy, f"epsilon_{level}") == pytest.approx(
        _opacus_epsilon(hospital, level), rel=1e-9)


def test_a_diverged_round_without_dp_is_declined_naming_the_learning_rate(tmp_path):
    hospital = Hospital(tmp_path)
    hospital.node = {**hospital.node, "dp-mode": "none"}
    hospital.app = build_client_app(trainer_for=lambda task: DivergingTrainer(get_trainer(task)))
    run = {**PLAIN_RUN, "dp.mode": "none"}

    reply, raw = hospital.train(_settings(run), run_config=run)

    assert isinstance(reply, DeclinedReply) and _has_no_update(raw)
    assert reply.reason == ("local training diverged (a non-finite update) at learning-rate "
                            f"{_settings(run).learning_rate:g}")
