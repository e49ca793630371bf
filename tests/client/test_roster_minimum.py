"""A hospital refuses a roster whose c is below its own minimum, before any noise is drawn.

Crafted Messages into the real ClientApp: a hospital whose node config states
``colluding-hospitals = 2`` is asked for a distributed-noise secure round under a pinned
roster that assumes c = 1. It declines naming both numbers; no noise is drawn and its ledger
stays empty. The same request to a hospital whose minimum the roster meets is answered.
"""

from dataclasses import replace

import pytest

from client.app import build_client_app
from common.config import RunConfig
from common.dp.ledger import PrivacyLedger
from common.models import build_model
from common.secagg.protocol import Key, Stage, load_roster
from common.secagg.round_settings import signed_settings
from common.tasks import get_task
from common.wire.replies import DeclinedReply, TrainReply
from server.federation import round_settings
from simulations.engine.ephemeral_roster import ensure_roster, key_path
from tests.wire_messages import context_for, reply_from, request_message

TASK = get_task("heart-disease")
WEIGHTS = build_model(TASK, seed=0).get_weights()
# t = 3 of 4; h = 1 passes the hospital's h <= t - c check for either minimum, so only the
# roster's c can make it refuse.
RUN = {"dp.mode": "hospital", "dp.noise-mode": "distributed", "secagg.enabled": True,
       "secagg.threshold": 3, "secagg.honest-contributors": 1, "local-steps": 2,
       "num-server-rounds": 3}


@pytest.fixture(autouse=True)
def fedcare_home(tmp_path, monkeypatch):
    """Hospital va's home, with the ledger its IT made (``fedcare budget init``, epsilon 2)."""
    from typer.testing import CliRunner

    from simulations.cli.main import app

    home = tmp_path / "hospital-home"
    monkeypatch.setenv("FEDCARE_HOME", str(home))
    made = CliRunner().invoke(app, ["budget", "init", str(home / "ledgers" / "va.json"),
                                    "--epsilon", "2"])
    assert made.exit_code == 0, made.output
    return home


@pytest.fixture
def draws(monkeypatch):
    """Every Gaussian noise draw a hospital-level round makes (count of calls)."""
    import client.privacy

    calls = []
    real = client.privacy.add_gaussian_noise

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(client.privacy, "add_gaussian_noise", counting)
    return calls


def _ask(tmp_path, minimum):
    """Ask hospital va (minimum `minimum`) for round 1 under a roster with c = 1."""
    path, digest = ensure_roster(tmp_path / "consortium", TASK.hospital_names(4),
                                 min_threshold=3, colluders=1)
    node = {"partition-id": 3, "num-partitions": 4, "dp-mode": "hospital",
            "colluding-hospitals": minimum, "roster-path": str(path), "roster-sha256": digest,
            "signing-key-path": str(key_path(tmp_path / "consortium", "va"))}
    config = RunConfig.from_run_config(RUN)
    settings = round_settings(config, "run-1", 1)
    d = sum(int(w.size) for w in WEIGHTS)
    message = request_message(
        replace(settings, evaluate_received=True), WEIGHTS, "train.secagg_advertise",
        secagg={Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: 1, Key.RUN_ID: settings.run_id,
                Key.ROSTER_DIGEST: load_roster(path).digest,
                Key.SETTINGS_DIGEST: signed_settings(settings, d).digest()})
    reply = build_client_app()(message=message, context=context_for(node, config.to_run_config()))
    return reply_from(reply)


def test_a_roster_below_the_hospitals_minimum_is_refused_before_any_draw(
        tmp_path, fedcare_home, draws):
    # Act
    reply = _ask(tmp_path, minimum=2)
    # Assert: declined with both numbers; nothing drawn, nothing charged
    assert isinstance(reply, DeclinedReply)
    assert "roster assumes c = 1" in reply.reason and "minimum of 2" in reply.reason
    assert "colluding-hospitals" in reply.reason
    assert draws == []
    assert len(PrivacyLedger.read(fedcare_home / "ledgers" / "va.json").entries) == 0


def test_a_roster_that_meets_the_minimum_is_answered(tmp_path, fedcare_home, draws):
    reply = _ask(tmp_path, minimum=1)
    assert isinstance(reply, TrainReply)
    assert draws  # the probe sees the draw a refusal must not make
    assert len(PrivacyLedger.read(fedcare_home / "ledgers" / "va.json").entries) == 1
