"""A slow hospital on the in-process engine is left out at its own deadline, never the others.

The real driver and ClientApp over the in-process grid: from round 2 on, hospital SLOW sleeps
longer than the round's deadline before every message (as the drills' ``hang`` fault does);
each reply is waited for at most round-timeout from the moment its hospital is handed the
message, so the other three take part in every round and each round lasts about one deadline,
not the sleep. (Round 1 has the server's start-up allowance: every first message imports and
traces the trainer.)
"""

import csv
import time

from client.app import build_client_app
from common.config import RunConfig
from common.wire.records import unpack_request
from server.federation import run_federation
from simulations.engine.in_process_grid import InProcessGrid
from simulations.engine.simulate import SimulatedHospitalPrivacy

NODES = {100 + i: {"partition-id": i, "num-partitions": 4} for i in range(4)}
SLOW = 101  # hungary's node
DEADLINE = 3.0  # round-timeout, seconds
SLEEP = 12.0  # the slow hospital's pause before each message from round 2 on, seconds
ROUNDS = 3


def _slow(msg, context, call_next):
    if context.node_id == SLOW and unpack_request(msg.content).settings.server_round >= 2:
        time.sleep(SLEEP)
    return call_next(msg, context)


def test_a_hospital_sleeping_past_the_deadline_costs_the_others_nothing(tmp_path):
    config = RunConfig.from_run_config({"dp.mode": "none", "local-steps": 2,
                                        "num-server-rounds": ROUNDS,
                                        "round-timeout": DEADLINE})
    app = build_client_app(SimulatedHospitalPrivacy(config, tmp_path / "ledgers"),
                           mods=[_slow])
    grid = InProcessGrid(app, NODES, config.to_run_config())
    (tmp_path / "run").mkdir()
    try:
        started = time.monotonic()
        run_federation(grid, config, tmp_path / "run")
        elapsed = time.monotonic() - started
    finally:
        grid.close()

    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["round"] for row in rows] == [str(r) for r in range(1, ROUNDS + 1)]
    # The three others took part in every round; the sleeper only before it slept.
    assert [row["participants"] for row in rows] == ["4"] + ["3"] * (ROUNDS - 1), rows
    assert grid.late.get(SLOW, 0) >= ROUNDS - 1 and set(grid.late) == {SLOW}, grid.late
    # Each exchange waited one deadline for the sleeper, not its sleep: the whole run took
    # less than the sleeps it would have waited for one after the other.
    assert elapsed < (ROUNDS - 1) * SLEEP, f"{elapsed:.1f} s"
    assert all(float(row["seconds"]) < SLEEP for row in rows[1:]), rows
