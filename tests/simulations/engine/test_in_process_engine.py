"""The in-process engine: fedcare's real ServerApp and ClientApp over real Flower Messages.

The run below is ``fedcare simulate``'s own (``simulate(..., engine=IN_PROCESS)``); that it ends
with the Ray run's model, bit for bit, is checked end to end in tests/e2e/test_simulate.py.
"""

import csv
import json

import numpy as np
import psutil
import pytest
from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from opacus.accountants import RDPAccountant

from common.config import RunConfig
from simulations.engine.in_process_engine import (
    IN_PROCESS_MAX_HOSPITALS,
    Engine,
    choose_engine,
    run_in_process,
)
from simulations.engine.simulate import simulate


@pytest.mark.parametrize(("asked", "hospitals", "runs_on"), [
    (Engine.AUTO, 3, Engine.IN_PROCESS),
    (Engine.AUTO, IN_PROCESS_MAX_HOSPITALS, Engine.IN_PROCESS),
    (Engine.AUTO, IN_PROCESS_MAX_HOSPITALS + 1, Engine.RAY),
    (Engine.RAY, 3, Engine.RAY),
    (Engine.IN_PROCESS, 100, Engine.IN_PROCESS),
])
def test_auto_runs_small_federations_in_process_and_an_asked_engine_is_kept(
        asked, hospitals, runs_on):
    assert choose_engine(asked, hospitals) is runs_on
    assert choose_engine(asked.value, hospitals) is runs_on  # as a benchmark passes it


def test_an_unknown_engine_is_refused_naming_the_engines():
    with pytest.raises(ValueError, match="must be one of auto, ray, in-process, got 'spark'"):
        choose_engine("spark", 4)


def test_hospitals_and_server_share_no_object_and_nodes_are_partitions():
    # Arrange: a hospital that scribbles on what it receives, a server that checks what it sent
    seen = []
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        arrays = msg.content["w"].to_numpy_ndarrays()
        msg.content["w"] = ArrayRecord([arrays[0] + 1])
        seen.append((context.node_id, dict(context.node_config), dict(context.run_config)))
        return Message(RecordDict({"w": ArrayRecord([arrays[0] * 2])}), reply_to=msg)

    server = ServerApp()
    outcome = {}

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        sent = [Message(RecordDict({"w": ArrayRecord([np.full(3, float(i))])}),
                        dst_node_id=node, message_type="train")
                for i, node in enumerate(sorted(grid.get_node_ids()))]
        replies = grid.send_and_receive(sent)
        outcome["sent"] = [m.content["w"].to_numpy_ndarrays()[0] for m in sent]
        outcome["replies"] = sorted(r.content["w"].to_numpy_ndarrays()[0][0] for r in replies)

    # Act
    run_in_process(server, client, hospitals=3)

    # Assert: the server's messages are untouched; each node is one partition, its own id
    assert [a.tolist() for a in outcome["sent"]] == [[0.0] * 3, [1.0] * 3, [2.0] * 3]
    assert outcome["replies"] == [0.0, 2.0, 4.0]
    assert sorted(config["partition-id"] for _, config, _ in seen) == [0, 1, 2]
    assert all(config["num-partitions"] == 3 for _, config, _ in seen)
    assert len({node for node, _, _ in seen}) == 3 and all(run == {} for _, _, run in seen)


def _opacus_patient_epsilon(ledger: dict, last_round: int | None = None) -> float:
    """The training track's patient-level epsilon, Opacus's accountant stepped entry by entry
    (only rounds up to `last_round`, if given).
    """
    accountant = RDPAccountant()
    for entry in ledger["entries"]:
        if entry.get("track", "training") == "training" and (
                last_round is None or entry["round"] <= last_round):
            for _ in range(entry["steps"]):
                accountant.step(noise_multiplier=entry["noise_multiplier"],
                                sample_rate=entry["sample_rate"])
    return accountant.get_epsilon(delta=ledger["budget"]["delta"])


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One round of the default federation (4 hospitals, patient-level DP), in this process."""
    run_dir = tmp_path_factory.mktemp("in-process")
    config = RunConfig.from_run_config({"num-server-rounds": 1, "local-steps": 2, "seed": 5})
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    simulate(config, run_dir, engine=Engine.IN_PROCESS)
    children_after = {p.pid for p in psutil.Process().children(recursive=True)}
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return run_dir, rows, children_after - children_before


def test_in_process_run_proves_every_identity_with_the_roster_key(default_run):
    run_dir, rows, _ = default_run

    identities = json.loads((run_dir / "identities.json").read_text())

    assert sorted(i["hospital"] for i in identities.values()) == [
        "cleveland", "hungary", "switzerland", "va"]
    assert {i["bound_by"] for i in identities.values()} == {"identity proof (roster key)"}
    assert rows[0]["participants"] == "4" and rows[0]["declined"] == "0"


def test_in_process_run_epsilons_equal_opacus_on_the_ledgers(default_run):
    run_dir, rows, _ = default_run

    # The last row includes the consortium explanation (charged under round 2, the one after
    # the last, and asked before the row is filed): the run-directory contract compares it
    # with Opacus on the whole training track, which is the ledger file's "entries".
    ledgers = {path.stem: json.loads(path.read_text())
               for path in sorted((run_dir / "ledgers").glob("*.json"))}
    spent = {name: _opacus_patient_epsilon(ledger) for name, ledger in ledgers.items()}
    updates_only = {name: _opacus_patient_epsilon(ledger, last_round=1)
                    for name, ledger in ledgers.items()}
    after = json.loads((run_dir / "explanation.json").read_text())["epsilon_after"]

    assert sorted(spent) == ["cleveland", "hungary", "switzerland", "va"]
    assert all(0 < epsilon <= 1.0 for epsilon in spent.values())
    for name, epsilon in spent.items():
        assert float(rows[-1][f"epsilon_{name}"]) == pytest.approx(epsilon, rel=1e-5)
        assert updates_only[name] < epsilon and after[name] == pytest.approx(epsilon, rel=1e-6)
        assert all("track" not in entry for entry in ledgers[name]["entries"])
    assert float(rows[-1]["epsilon_patient_max"]) == pytest.approx(max(spent.values()), rel=1e-5)


def test_in_process_run_starts_no_process_and_writes_the_run_directory(default_run):
    run_dir, _, started = default_run

    assert started == set()
    for name in ("config.json", "model.keras", "report.md", "checkpoint"):
        assert (run_dir / name).exists()


def test_a_federation_without_dp_learns_in_process(tmp_path):
    config = RunConfig.from_run_config({"num-server-rounds": 3, "dp.mode": "none", "seed": 1})

    simulate(config, tmp_path, engine=Engine.IN_PROCESS)

    with open(tmp_path / "metrics.csv", newline="") as handle:
        losses = [float(row["pooled_loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 3 and losses[-1] < losses[0]
