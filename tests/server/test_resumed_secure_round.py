"""A secure DP run whose server dies mid-round is resumed: that round is aborted, never re-run.

The real driver and ClientApp over the in-process grid of real Flower Messages. The server
'dies' (KeyboardInterrupt) as it sends round 2's unmask messages, after every hospital has
charged its ledger and sent its masked input; the hospitals keep running (the same grid, so
the same node contexts and ledgers). The resumed server files round 2 as aborted (nothing of it
averaged in, nobody blamed, the charges stand) and goes on with round 3: no hospital is asked
into a second sum for round 2, and no ledger is charged twice for a round.
"""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from client.app import build_client_app
from common.config import RunConfig
from common.secagg.protocol import Key
from common.wire.records import unpack_request
from server.federation import INTERRUPTED, run_federation
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy, with_ephemeral_roster

NODES = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
ROUNDS = 4
ADVERTISE = "train.secagg_advertise"


class DyingServerGrid(InProcessGrid):
    """The server dies as it sends round `crash_round`'s `crash_type` messages (once)."""

    def __init__(self, *args, crash_round: int, crash_type: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crash_round: int | None = crash_round
        self.crash_type = crash_type

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if (messages and messages[0].metadata.message_type == self.crash_type
                and int(messages[0].content["secagg"][Key.ROUND]) == self.crash_round):
            self.crash_round = None  # the restarted server's grid delivers everything
            raise KeyboardInterrupt("the server was killed")
        return super().send_and_receive(messages, timeout=timeout)


def _opacus(entries, delta):
    accountant = RDPAccountant()
    for entry in entries:
        for _ in range(entry["steps"]):
            accountant.step(noise_multiplier=entry["noise_multiplier"],
                            sample_rate=entry["sample_rate"])
    return accountant.get_epsilon(delta=delta)


def _killed_and_resumed(tmp_path, config, *, crash_round):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = with_ephemeral_roster(config, run_dir)
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"))
    grid = DyingServerGrid(app, NODES, config.to_run_config(), crash_round=crash_round,
                           crash_type="train.secagg_unmask")
    with pytest.raises(KeyboardInterrupt):
        run_federation(grid, config, run_dir)
    assert grid.crash_round is None  # it died where the test meant it to
    run_id = json.loads((run_dir / "config.json").read_text())["run_id"]
    charged = {path.stem: [e["round"] for e in json.loads(path.read_text())["entries"]]
               for path in sorted((run_dir / "ledgers").glob("*.json"))}
    final = run_federation(grid, replace(config, resume=True), run_dir)
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return run_dir, run_id, grid, charged, rows, final


def _sent_model(grid, server_round):
    """The global weights the advertise messages of `server_round` carried (the last sent)."""
    sent = [unpack_request(m.content).weights for m in grid.sent
            if m.metadata.message_type == ADVERTISE
            and unpack_request(m.content).settings.server_round == server_round]
    assert sent, f"round {server_round} sent no advertise message"
    return sent[-1]


@pytest.fixture(scope="module")
def secure_dp(tmp_path_factory):
    config = RunConfig.from_run_config({
        "dp.mode": "hospital", "dp.epsilon": 8.0, "dp.noise-mode": "distributed",
        "secagg.enabled": True, "local-steps": 2, "num-server-rounds": ROUNDS, "seed": 3})
    assert config.effective_threshold == 3
    return config, _killed_and_resumed(tmp_path_factory.mktemp("resumed-secure"), config,
                                       crash_round=2)


def test_the_interrupted_round_is_aborted_and_the_run_goes_on_with_everyone(secure_dp):
    _, (run_dir, _, grid, charged, rows, final) = secure_dp

    # Before the kill every hospital had charged round 2 (its masked input was sent).
    assert sorted(charged) == ["cleveland", "hungary", "switzerland", "va"]
    assert all(rounds == [1, 2] for rounds in charged.values()), charged
    # Round 2 is filed aborted, rounds 3 and 4 ran with all four hospitals.
    assert [(r["round"], r["participants"], r["aborted"], r["declined"], r["rejected"])
            for r in rows] == [("1", "4", "0", "0", "0"), ("2", "0", "1", "0", "0"),
                               ("3", "4", "0", "0", "0"), ("4", "4", "0", "0", "0")]
    # Nothing of round 2 was averaged in: round 3 started from the model after round 1.
    for before, after in zip(_sent_model(grid, 2), _sent_model(grid, 3), strict=True):
        np.testing.assert_array_equal(before, after)
    # The resumed server asked nobody into round 2 again: its only round-2 messages are the
    # killed server's (one advertise message to each hospital).
    assert sum(m.metadata.message_type == ADVERTISE
               and unpack_request(m.content).settings.server_round == 2 for m in grid.sent) == 4
    report = (run_dir / "report.md").read_text()
    assert f"- round 2: {INTERRUPTED}" in report
    assert not any(np.isnan(w).any() for w in final)


def test_no_round_is_charged_twice_and_each_epsilon_is_opacus_on_its_ledger(secure_dp):
    config, (run_dir, run_id, _, _, rows, _) = secure_dp

    for path in sorted((run_dir / "ledgers").glob("*.json")):
        ledger = json.loads(path.read_text())
        entries = [e for e in ledger["entries"] if e["run"] == run_id]
        rounds = [e["round"] for e in entries]
        # Rounds 1 to 4's updates, each once: round 2's charge (before the kill) stands.
        assert rounds == [1, 2, 3, 4], path.stem
        epsilon = _opacus(ledger["entries"], ledger["budget"]["delta"])
        assert float(rows[-1][f"epsilon_{path.stem}"]) == pytest.approx(epsilon, rel=1e-5)
        assert 0 < epsilon <= config.dp_epsilon
    assert float(rows[-1]["epsilon_hospital_max"]) == pytest.approx(
        max(float(rows[-1][f"epsilon_{name}"]) for name in
            ("cleveland", "hungary", "switzerland", "va")), rel=1e-9)


@pytest.fixture(scope="module")
def last_round(tmp_path_factory):
    config = RunConfig.from_run_config({"dp.mode": "none", "secagg.enabled": True,
                                        "local-steps": 2, "num-server-rounds": 3, "seed": 3})
    return _killed_and_resumed(tmp_path_factory.mktemp("resumed-last"), config, crash_round=3)


def test_an_interrupted_last_round_ends_the_run_aborted_with_every_row_evaluated(last_round):
    run_dir, _, grid, _, rows, final = last_round

    assert [(r["round"], r["participants"], r["aborted"]) for r in rows] == [
        ("1", "4", "0"), ("2", "4", "0"), ("3", "0", "1")]
    # Round 2's row, whose folded evaluation went to the server that died, is evaluated by
    # the resumed one; round 3 changed nothing, so its final evaluation is of the same model.
    assert all(r["pooled_loss"] for r in rows)
    assert rows[2]["pooled_loss"] == rows[1]["pooled_loss"]
    for before, after in zip(_sent_model(grid, 3), final, strict=True):
        np.testing.assert_array_equal(before, after)
    assert f"- round 3: {INTERRUPTED}" in (run_dir / "report.md").read_text()
    assert (run_dir / "model.keras").is_file()
