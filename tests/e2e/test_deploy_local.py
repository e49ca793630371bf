"""End to end: ``fedcare deploy-local``, a real SuperLink and SuperNodes as separate processes.

The SuperLink runs with TLS (a fresh consortium CA) and SuperNode authentication (each
hospital's key registered through Flower's Control API); three SuperNodes each read their own
CSV file against the consortium's schema. Two rounds must lower the global model's loss, and
nothing deploy-local started may outlive it, whether it finishes or is interrupted.

Every process inherits the test's environment marker; cleanup (``fedcare_cli``, or the
``finally`` below) kills whatever still carries it, by pid.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from processes import MARKER, kill_marked, wait_until_gone  # noqa: E402

pytestmark = pytest.mark.slow

FEDCARE = Path(sys.executable).with_name("fedcare")
HOSPITALS = 3
ROUNDS = 2


def test_deploy_local_csv_three_hospitals_tls_and_authentication(fedcare_cli,
                                                                short_tmp_path):
    out = short_tmp_path / "deployment"
    # DP stays on (patient level); a larger budget keeps 2 rounds' noise from masking progress.
    proc, marker = fedcare_cli(
        "deploy-local", "--hospitals", str(HOSPITALS), "--task", "csv", "--rounds", str(ROUNDS),
        "--out", str(out), "--epsilon", "10", "--timeout", "900", timeout=1200)
    survivors = wait_until_gone(marker, 20.0)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert survivors == [], f"processes left running after deploy-local: {survivors}"

    with open(out / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["round"] for row in rows] == [str(r) for r in range(1, ROUNDS + 1)]
    assert all(row["participants"] == str(HOSPITALS) for row in rows)
    # Under DP only the final model is evaluated, as one DP release per hospital (no loss sum
    # leaves): the last row carries the released pooled accuracy, a noisy estimate.
    assert rows[-1]["pooled_accuracy"] not in ("", "nan"), f"no DP evaluation: {rows[-1]}"
    assert (out / "run" / "model.keras").is_file()
    # The server learnt each node's hospital from its registered SuperNode name (Flower's
    # NodeInfo.name through the Runtime API), not from what the replies claimed.
    identities = json.loads((out / "run" / "identities.json").read_text())
    assert sorted(i["hospital"] for i in identities.values()) == [
        f"hospital-{i}" for i in range(HOSPITALS)]
    assert all(i["bound_by"] == "registered name" for i in identities.values()), identities

    # TLS and SuperNode authentication were on, and each hospital used its own files.
    superlink_log = (out / "logs" / "superlink.log").read_text()
    assert "running on https://" in superlink_log
    assert "SuperNode authentication is disabled" not in superlink_log
    data_paths, ledgers = set(), set()
    for index in range(HOSPITALS):
        name = f"hospital-{index}"
        node = tomllib.loads((out / "nodes" / f"{name}.toml").read_text())
        assert node["partition-id"] == index and node["num-partitions"] == HOSPITALS
        assert len(node["app-sha256"]) == 64
        data_paths.add(node["data-path"])
        assert Path(node["data-path"]).is_file() and Path(node["schema-path"]).is_file()
        assert Path(node["ledger-path"]).is_file(), f"{name} wrote no ledger"
        ledgers.add(node["ledger-path"])
        assert (out / "certs" / f"{name}.pub").is_file()
        assert oct((out / "certs" / f"{name}.key").stat().st_mode & 0o777) == "0o600"
    assert len(data_paths) == len(ledgers) == HOSPITALS
    # Every per-message process was fedcare's lean flwr-clientapp (Flower's own script logs
    # "Start `flwr-clientapp` process"; the lean one does not import it).
    assert (out / "bin" / "flwr-clientapp").resolve().name == "fedcare-clientapp"
    for index in range(HOSPITALS):
        node_log = (out / "logs" / f"hospital-{index}.log").read_text()
        assert "Receiving: train message" in node_log
        assert "Start `flwr-clientapp` process" not in node_log
        # ... handed to the hospital's fork server: each message a child process of its own,
        # on fedcare-supernode's short idle poll.
        server_log = (out / "logs" / f"hospital-{index}-clientapp-server.log").read_text()
        forked = [line.split("ClientApp process ")[1].split()[0]
                  for line in server_log.splitlines() if line.endswith(" forked")]
        assert len(forked) == node_log.count("Receiving: ") > 0, server_log
        assert len(set(forked)) == len(forked)
        assert "running the ClientApp in this process instead" not in node_log
        assert "fedcare-supernode: flower-supernode with a 0.25 s idle poll" in node_log
    admin = tomllib.loads((out / "flower-home" / "config.toml").read_text())
    assert admin["superlink"]["fedcare"]["root-certificates"] == str(out / "certs" / "ca.crt")


def test_deploy_local_interrupted_stops_every_process(short_tmp_path):
    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER: marker}
    proc = subprocess.Popen(
        [str(FEDCARE), "deploy-local", "--hospitals", "2", "--rounds", "1",
         "--out", str(short_tmp_path / "deployment"), "--timeout", "300"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            output.append(line)
            if "SuperNodes online" in line:
                break
        assert any("SuperNodes online" in line for line in output), "".join(output)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        rest, _ = proc.communicate(timeout=60)
        elapsed = time.monotonic() - sent
        output.append(rest)
        assert proc.returncode == 130, "".join(output)
        assert elapsed < 15, f"took {elapsed:.1f} s to stop"
        assert "interrupted by SIGINT" in "".join(output)
        assert wait_until_gone(marker, 20.0) == [], "processes outlived an interrupted run"
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_marked(marker)
