"""A hospital's privacy holds whatever the server sends (crafted Messages, the real ClientApp)."""

import shutil
import threading
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from client.app import build_client_app
from common.config import RunConfig
from common.dp.ledger import PrivacyLedger
from common.models import build_model
from common.tasks import get_task
from common.wire.modes import DpMode
from common.wire.replies import DeclinedReply, TrainReply
from server.federation import round_settings
from simulations.cli.main import app as fedcare_cli
from tests.wire_messages import context_for, reply_from, request_message

TASK = get_task("heart-disease")
WEIGHTS = build_model(TASK, seed=0).get_weights()


@pytest.fixture(autouse=True)
def fedcare_home(tmp_path, monkeypatch):
    """Hospital va's own FEDCARE_HOME, where its admin ran `fedcare budget init` (defaults)."""
    home = tmp_path / "hospital-home"
    monkeypatch.setenv("FEDCARE_HOME", str(home))
    done = CliRunner().invoke(fedcare_cli, ["budget", "init", str(home / "ledgers" / "va.json")])
    assert done.exit_code == 0, done.output
    return home


def _settings(run_config, server_round=1, run_id="run-1"):
    config = RunConfig.from_run_config({"local-steps": 2, "num-server-rounds": 3, **run_config})
    return round_settings(config, run_id, server_round), config


def _train(node, run_config, server_round=1, run_id="run-1", app=None):
    settings, config = _settings(run_config, server_round, run_id)
    reply = (app or build_client_app())(message=request_message(settings, WEIGHTS),
                                        context=context_for(node, config.to_run_config()))
    return reply_from(reply)


NODE = {"partition-id": 3, "num-partitions": 4}


@pytest.mark.parametrize("node_keys", [{}, {"budget-epsilon": 2.0, "dp-mode": "patient"}],
                         ids=["no-node-keys", "node-keys"])
def test_a_run_config_without_dp_is_declined_and_nothing_released(tmp_path, node_keys):
    reply = _train({**NODE, **node_keys}, {"dp.mode": "none"})
    assert isinstance(reply, DeclinedReply)
    assert "applies dp mode 'patient' but the run asks 'none'" in reply.reason
    assert reply.statistics is None


def test_a_run_config_budget_never_becomes_the_hospitals(fedcare_home):
    # The server's dp.epsilon 50 is ignored: the hospital's own budget (init's default 1) holds.
    reply = _train(NODE, {"dp.epsilon": 50.0})
    assert isinstance(reply, TrainReply) and reply.privacy.budget_epsilon == 1.0
    ledger = PrivacyLedger.read(fedcare_home / "ledgers" / "va.json")
    assert ledger.budget_epsilon == 1.0 and ledger.budget_delta == 1e-5


def test_without_ledger_path_the_same_ledger_serves_every_out_dir(fedcare_home, tmp_path):
    for number, out_dir in enumerate((tmp_path / "a", tmp_path / "b")):
        _train(NODE, {"out-dir": str(out_dir)}, run_id=f"run-{number}")
    ledger = PrivacyLedger.read(fedcare_home / "ledgers" / "va.json")
    assert {entry.run for entry in ledger.entries} == {"run-0", "run-1"}
    assert not (tmp_path / "a" / "ledgers").exists()


def test_a_missing_configured_ledger_is_a_refusal_naming_budget_init(tmp_path):
    ledger = tmp_path / "cleveland-ledger.json"  # hospital 0 has no ledger yet
    reply = _train({"partition-id": 0, "num-partitions": 4, "ledger-path": str(ledger)}, {})
    assert isinstance(reply, DeclinedReply)
    assert f"fedcare budget init {ledger} --hospital cleveland" in reply.reason
    assert not ledger.exists()


def test_a_second_ledger_for_the_same_hospital_is_refused(fedcare_home, tmp_path):
    # va's admin ran `budget init` at the built-in location; another ledger-path would be a
    # second, fresh budget for the same patients.
    ledger = tmp_path / "va-ledger.json"
    reply = _train({**NODE, "ledger-path": str(ledger)}, {})
    assert isinstance(reply, DeclinedReply)
    assert f"records another ledger of hospital 'va', {fedcare_home / 'ledgers' / 'va.json'}" in (
        reply.reason)
    assert not ledger.exists()


def test_a_deleted_ledger_is_refused_not_recreated(fedcare_home):
    _train(NODE, {}, run_id="run-0")
    path = fedcare_home / "ledgers" / "va.json"
    path.unlink()
    reply = _train(NODE, {}, run_id="run-1")
    assert isinstance(reply, DeclinedReply) and "is missing" in reply.reason
    assert not path.exists()  # no fresh budget was made


def test_rm_r_of_the_default_ledger_directory_is_refused(fedcare_home):
    assert isinstance(_train(NODE, {}, server_round=1), TrainReply)
    shutil.rmtree(fedcare_home / "ledgers")  # the ledger, its releases and its beside head

    reply = _train(NODE, {}, server_round=2)

    head = fedcare_home / "heads" / "va.head"
    assert isinstance(reply, DeclinedReply) and reply.privacy is None
    assert f"its head file {head} records write 2 of hospital 'va'" in reply.reason
    assert "was deleted" in reply.reason
    assert not (fedcare_home / "ledgers").exists()  # nothing recreated, nothing released


def test_restoring_an_older_copy_of_the_default_ledger_directory_is_refused(fedcare_home,
                                                                             tmp_path):
    ledgers, snapshot = fedcare_home / "ledgers", tmp_path / "snapshot"
    assert isinstance(_train(NODE, {}, server_round=1), TrainReply)
    shutil.copytree(ledgers, snapshot)  # a backup of the whole directory at write 2
    assert isinstance(_train(NODE, {}, server_round=2), TrainReply)
    shutil.rmtree(ledgers)
    shutil.copytree(snapshot, ledgers)  # the budget rolled back to round 1

    reply = _train(NODE, {}, server_round=3)

    assert isinstance(reply, DeclinedReply)
    assert "records write 3, the ledger is at write 2" in reply.reason
    assert "older copy" in reply.reason
    assert [e.round for e in PrivacyLedger.read(
        ledgers / "va.json", head_path=snapshot / ".va.json.head").entries] == [1]


def test_a_missing_ledger_with_a_missing_head_is_refused_naming_budget_init(fedcare_home):
    # Hospital 0 (cleveland) never ran `fedcare budget init`.
    reply = _train({"partition-id": 0, "num-partitions": 4}, {})

    ledger, head = (fedcare_home / "ledgers" / "cleveland.json",
                    fedcare_home / "heads" / "cleveland.head")
    assert isinstance(reply, DeclinedReply) and reply.privacy is None
    assert f"no privacy ledger at {ledger} (nor a head file at {head})" in reply.reason
    assert f"`fedcare budget init {ledger} --head {head} --epsilon E --delta D`" in reply.reason
    assert not ledger.exists() and not head.exists()


def test_a_restored_older_ledger_is_refused(fedcare_home, tmp_path):
    head = tmp_path / "other-volume" / "va.head"
    ledger = tmp_path / "va.json"
    PrivacyLedger.create(ledger, hospital="va", budget_epsilon=1.0, budget_delta=1e-5,
                         head_path=head)
    node = {**NODE, "ledger-path": str(ledger), "ledger-head-path": str(head)}
    _train(node, {}, server_round=1)
    older = ledger.read_bytes()
    _train(node, {}, server_round=2)
    ledger.write_bytes(older)  # the hospital's budget restored to an earlier state
    reply = _train(node, {}, server_round=3)
    assert isinstance(reply, DeclinedReply) and "head" in reply.reason
    assert reply.reason.count(str(head)) >= 1


def test_two_concurrent_requests_for_one_round_release_once(fedcare_home):
    app = build_client_app()
    replies: list = []

    def ask() -> None:
        replies.append(_train(NODE, {}, app=app))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, TrainReply) for r in replies)
    for a, b in zip(replies[0].update, replies[1].update, strict=True):
        np.testing.assert_array_equal(a, b)
    ledger = PrivacyLedger.read(fedcare_home / "ledgers" / "va.json")
    assert len(ledger.entries) == 1


@pytest.mark.parametrize(("mode", "secure"), [
    ("none", False), ("patient", False), ("hospital", False),
    ("none", True), ("patient", True), ("hospital", True), ("hospital-distributed", True)])
def test_every_reply_matches_the_manifest_of_its_mode(tmp_path, mode, secure):
    from common.wire.replies import allowed_parts, present_parts

    run = {"dp.mode": mode, "secagg.enabled": secure}
    if mode == "hospital-distributed":
        mode = "hospital"
        run = {"dp.mode": mode, "dp.noise-mode": "distributed", "secagg.enabled": True}
    settings, config = _settings(run)
    node = {**NODE, "dp-mode": mode}
    if secure:  # the hospital pins a consortium roster and holds its signing key
        from simulations.engine.ephemeral_roster import ensure_roster, key_path

        names = TASK.hospital_names(4)
        path, digest = ensure_roster(tmp_path, names, min_threshold=3)
        node.update({"roster-path": str(path), "roster-sha256": digest,
                     "signing-key-path": str(key_path(tmp_path, "va"))})
    app = build_client_app()
    if secure:
        from common.secagg.protocol import Key, Stage, load_roster
        from common.secagg.round_settings import signed_settings

        d = sum(int(w.size) for w in WEIGHTS)
        message = request_message(replace(settings, evaluate_received=True), WEIGHTS,
                                  "train.secagg_advertise",
                                  secagg={Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: 1,
                                          Key.RUN_ID: settings.run_id,
                                          Key.ROSTER_DIGEST: load_roster(path).digest,
                                          Key.SETTINGS_DIGEST:
                                              signed_settings(settings, d).digest()})
    else:
        message = request_message(settings, WEIGHTS)
    reply = reply_from(app(message=message, context=context_for(node, config.to_run_config())))
    assert isinstance(reply, TrainReply)
    assert present_parts(reply) <= allowed_parts(DpMode(mode), settings.noise_mode, secure)
    if mode != "none":
        assert reply.num_examples is None and reply.train_loss is None
    if mode == "hospital":
        assert reply.train_loss is None  # hospital level never sends its training loss


@pytest.mark.parametrize(("weights", "problem"), [
    ([WEIGHTS[0][:5], WEIGHTS[1]], "array 0 has shape (5, 1), expected (15, 1)"),
    ([WEIGHTS[0], np.full_like(WEIGHTS[1], np.nan)], "array 1 has non-finite values"),
    ([WEIGHTS[0], np.full_like(WEIGHTS[1], np.inf)], "array 1 has non-finite values"),
    ([WEIGHTS[0].astype(np.float64), WEIGHTS[1]], "array 0 has dtype float64, expected float32"),
    (WEIGHTS[:1], "1 arrays, expected 2"),
    ([*WEIGHTS, WEIGHTS[1]], "3 arrays, expected 2"),
], ids=["shape", "nan", "inf", "dtype", "fewer", "more"])
@pytest.mark.parametrize("message_type", ["train", "evaluate"])
def test_weights_that_are_not_the_tasks_model_are_declined_and_nothing_charged(
        fedcare_home, weights, problem, message_type):
    settings, config = _settings({})
    settings = replace(settings, evaluate_received=True)
    reply = reply_from(build_client_app()(
        message=request_message(settings, weights, message_type),
        context=context_for(NODE, config.to_run_config())))
    assert isinstance(reply, DeclinedReply)
    assert reply.reason.startswith(
        f"the server's weights do not fit the heart-disease model: {problem}")
    assert reply.statistics is None
    ledger = fedcare_home / "ledgers" / "va.json"
    assert not ledger.exists() or not PrivacyLedger.read(ledger).entries
    assert not list(fedcare_home.rglob("*.npz"))  # no release saved
