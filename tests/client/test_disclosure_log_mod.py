"""The disclosure log through the real ClientApp: crafted Messages, then `fedcare budget`."""

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from client.app import build_client_app
from common.config import RunConfig
from common.dp.disclosure_log import log_path, read_anchor, read_records
from common.dp.ledger import PrivacyLedger
from common.models import build_model
from common.tasks import get_task
from common.wire.replies import DeclinedReply, TrainReply
from server.federation import round_settings
from simulations.cli.main import app as fedcare_cli
from tests.wire_messages import context_for, reply_from, request_message

TASK = get_task("heart-disease")
NODE = {"partition-id": 3, "num-partitions": 4}  # va


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Hospital va's FEDCARE_HOME, its ledger made by `fedcare budget init --epsilon 3`."""
    home = tmp_path / "hospital-home"
    monkeypatch.setenv("FEDCARE_HOME", str(home))
    done = CliRunner().invoke(fedcare_cli, ["budget", "init", str(home / "ledgers" / "va.json"),
                                            "--epsilon", "3"])
    assert done.exit_code == 0, done.output
    return home


@pytest.fixture(scope="module")
def weights():
    return build_model(TASK, seed=0).get_weights()


def _ask(weights, node, server_round=1, message_type="train", app=None, run=None):
    config = RunConfig.from_run_config({"local-steps": 2, "num-server-rounds": 3, **(run or {})})
    settings = round_settings(config, "run-1", server_round)
    message = request_message(settings, weights, message_type)
    return (app or build_client_app())(message=message,
                                       context=context_for(node, config.to_run_config()))


def _records(home):
    return read_records(log_path(home / "ledgers" / "va.json"))


def _budget(home, *args):
    return CliRunner().invoke(fedcare_cli, ["budget", str(home / "ledgers" / "va.json"), *args])


def test_budget_init_is_the_logs_first_record_anchored_in_the_head(home):
    records = _records(home)

    assert [r["event"] for r in records] == ["budget-init"]
    assert records[0]["budget"]["epsilon"] == 3.0 and records[0]["by"] == "fedcare budget init"
    assert read_anchor(home / "heads" / "va.head").count == 1


def test_an_answered_request_records_what_left_and_its_epsilon(home, weights):
    message = _ask(weights, {**NODE, "budget-epsilon": 3.0})
    reply = reply_from(message)
    assert isinstance(reply, TrainReply)

    record = _records(home)[-1]

    assert record["event"] == "request" and record["outcome"] == "answered"
    assert record["kind"] == "train" and record["hospital"] == "va"
    assert record["fedcare"] == {"run_id": "run-1", "round": 1}
    assert record["flower"] == {"run_id": 1, "message_id": "m1", "node_id": 7,
                                "server_node_id": 1}
    assert len(record["code_sha256"]) == 64
    sent = {r["name"]: r for r in record["sent"]["records"]}
    assert set(sent) == set(message.content) == {"arrays", "privacy", "reply"}
    assert [f["shape"] for f in sent["arrays"]["fields"]] == [list(w.shape) for w in reply.update]
    for name in ("privacy", "reply"):  # every field that left, by name (values: never)
        assert [f["name"] for f in sent[name]["fields"]] == list(message.content[name])
    assert {"epsilon-patient", "budget-epsilon"} <= {f["name"] for f in sent["privacy"]["fields"]}
    assert record["sent"]["bytes"] == sum(f["bytes"] for r in sent.values() for f in r["fields"])
    ledger = PrivacyLedger.read(home / "ledgers" / "va.json")
    [release] = record["releases"]
    assert release["charged"] == "this request"
    assert (release["run"], release["round"], release["track"]) == ("run-1", 1, "train")
    assert release["epsilon_after"]["train"] == pytest.approx(ledger.entries[0].after.patient)
    assert release["epsilon_charged"]["train"] == pytest.approx(ledger.entries[0].after.patient)
    assert record["ledger"]["write"] == ledger.sequence
    assert read_anchor(home / "heads" / "va.head").head == record["hash"]


def test_a_declined_request_records_its_reason_and_nothing_charged(home, weights):
    reply = reply_from(_ask(weights, NODE, run={"dp.mode": "none"}))
    assert isinstance(reply, DeclinedReply)

    record = _records(home)[-1]

    assert record["outcome"] == "declined" and record["reason"] == reply.reason
    assert record["releases"] == []
    assert {r["name"] for r in record["sent"]["records"]} == {"reply"}


def test_lowering_the_budget_in_the_node_config_is_a_record_not_a_rewrite(home, weights):
    _ask(weights, {**NODE, "budget-epsilon": 3.0}, server_round=1)
    _ask(weights, {**NODE, "budget-epsilon": 2.0}, server_round=2)

    events = [(r["event"], r.get("budget", {}).get("epsilon")) for r in _records(home)]

    assert events == [("budget-init", 3.0), ("request", None), ("budget-lowered", 2.0),
                      ("request", None)]
    lowered = _records(home)[2]
    assert lowered["previous_budget"]["epsilon"] == 3.0
    assert lowered["cause"] == "the node config's budget-epsilon=2.0"
    assert lowered["budget"]["delta"] == lowered["previous_budget"]["delta"]  # delta not set


def test_a_node_config_silent_on_the_budget_keeps_the_ledgers_budget(home, weights):
    # The ledger was made with epsilon 3 (`fedcare budget init`); the node config sets no
    # budget-epsilon or budget-delta: fedcare's default (epsilon 1) must not lower it.
    reply = reply_from(_ask(weights, NODE))
    second = reply_from(_ask(weights, NODE, server_round=2))

    ledger = PrivacyLedger.read(home / "ledgers" / "va.json")
    assert (ledger.budget_epsilon, ledger.budget_delta) == (3.0, 1e-5)
    assert [r["event"] for r in _records(home)] == ["budget-init", "request", "request"]
    assert isinstance(reply, TrainReply) and isinstance(second, TrainReply)
    assert reply.privacy.budget_epsilon == second.privacy.budget_epsilon == 3.0


def test_a_resent_release_is_marked_charged_earlier(home, weights):
    app = build_client_app()
    _ask(weights, {**NODE, "budget-epsilon": 3.0}, app=app)
    _ask(weights, {**NODE, "budget-epsilon": 3.0}, app=app)  # the same request again

    first, again = (r for r in _records(home) if r["event"] == "request")

    assert [r["charged"] for r in first["releases"]] == ["this request"]
    assert [r["charged"] for r in again["releases"]] == ["earlier"]
    assert len(PrivacyLedger.read(home / "ledgers" / "va.json").entries) == 1


def test_a_reply_that_cannot_be_recorded_is_not_sent(home, weights):
    log = log_path(home / "ledgers" / "va.json")
    log.unlink()
    log.mkdir()  # the log cannot be appended to

    reply = _ask(weights, {**NODE, "budget-epsilon": 3.0})

    assert reply.has_error()
    assert "disclosure log cannot be written, so nothing is sent" in reply.error.reason


@pytest.mark.parametrize("tamper", ["edit", "truncate", "restore"])
def test_fedcare_budget_reports_a_tampered_log(home, weights, tmp_path, tamper):
    node = {**NODE, "budget-epsilon": 3.0}
    _ask(weights, node, server_round=1)
    log = log_path(home / "ledgers" / "va.json")
    backup = log.read_text()
    _ask(weights, node, server_round=2)
    assert _budget(home).exit_code == 0
    lines = log.read_text().splitlines()
    if tamper == "edit":
        record = json.loads(lines[1])
        record["sent"]["bytes"] = 0  # hide how much left
        lines[1] = json.dumps(record)
        log.write_text("\n".join(lines) + "\n")
    elif tamper == "truncate":
        log.write_text("\n".join(lines[:-1]) + "\n")
    else:
        log.write_text(backup)

    done = _budget(home)

    assert done.exit_code == 1
    message = " ".join(done.output.split())
    assert "FAILED verification" in message
    expected = {"edit": "record 2 was edited",
                "truncate": "anchors record 3, but the log ends at record 2",
                "restore": "anchors record 3, but the log ends at record 2"}[tamper]
    assert expected in message


def test_fedcare_budget_says_the_chain_verified(home, weights):
    _ask(weights, {**NODE, "budget-epsilon": 3.0})

    done = _budget(home)

    assert done.exit_code == 0, done.output
    assert "2 records, hash chain verified, anchored in the ledger's head file at record 2" in (
        " ".join(done.output.split()))


def test_a_request_for_a_deleted_ledger_directory_makes_nothing(home, weights):
    import shutil

    shutil.rmtree(home / "ledgers")

    reply = reply_from(_ask(weights, NODE))

    assert isinstance(reply, DeclinedReply) and "was deleted" in reply.reason
    assert not (home / "ledgers").exists()  # neither the ledger nor its log recreated


def test_a_secure_round_stage_names_its_stage(home, weights, tmp_path):
    from common.secagg.protocol import Key, Stage, load_roster
    from common.secagg.round_settings import signed_settings
    from simulations.engine.ephemeral_roster import ensure_roster, key_path

    path, digest = ensure_roster(tmp_path, TASK.hospital_names(4), min_threshold=3)
    node = {**NODE, "budget-epsilon": 3.0, "roster-path": str(path), "roster-sha256": digest,
            "signing-key-path": str(key_path(tmp_path, "va"))}
    config = RunConfig.from_run_config({"local-steps": 2, "num-server-rounds": 3,
                                        "secagg.enabled": True})
    settings = replace(round_settings(config, "run-1", 1))
    d = sum(int(w.size) for w in weights)
    message = request_message(settings, weights, "train.secagg_advertise", secagg={
        Key.STAGE: Stage.ADVERTISE_KEYS, Key.ROUND: 1, Key.RUN_ID: settings.run_id,
        Key.ROSTER_DIGEST: load_roster(path).digest,
        Key.SETTINGS_DIGEST: signed_settings(settings, d).digest()})

    build_client_app()(message=message, context=context_for(node, config.to_run_config()))

    record = _records(home)[-1]
    assert record["kind"] == "train.secagg_advertise"
    assert record["stage"] == str(Stage.ADVERTISE_KEYS)
    assert "arrays" not in {r["name"] for r in record["sent"]["records"]}  # nothing unmasked
