"""End to end: ``fedcare deploy-local``, a real SuperLink and SuperNodes as separate processes.

The SuperLink runs with TLS (a fresh consortium CA) and SuperNode authentication (each
hospital's key registered through Flower's Control API); three SuperNodes each read their own
CSV file against the consortium's schema. Nothing deploy-local started may outlive it, whether
it finishes or is interrupted.

One pair of deployments (the module's ``deployments``) serves two tests: the first run (two
rounds lower the loss under TLS and authentication, each hospital its own files, each message
a process of its own) and, with a second run into the same --out with --force, each hospital's
disclosure log across both. Every process inherits an environment marker; cleanup (the
fixture's ``finally``, or the test's) kills whatever still carries it, by pid.
"""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from processes import MARKER, kill_marked, wait_until_gone  # noqa: E402

from common.dp.disclosure_log import verify_beside  # noqa: E402
from common.dp.ledger import PrivacyLedger  # noqa: E402

pytestmark = pytest.mark.slow

FEDCARE = Path(sys.executable).with_name("fedcare")
HOSPITALS = 3
NAMES = tuple(f"hospital-{index}" for index in range(HOSPITALS))
ROUNDS = 2


@dataclass(frozen=True)
class Deployments:
    """Two deploy-local runs into one --out, the second with --force."""

    out: Path  # the --out: ledgers, certificates, node configs; the second run's directories
    first: Path  # the first run's run directory and logs, set aside by --force (previous-*)
    run_ids: tuple[str, str]  # Flower's run ids, first and second
    logs_after_first: dict[str, list[dict]]  # each hospital's disclosure records after it


def _deploy(out: Path, *extra: str) -> str:
    """Run deploy-local (task csv, patient-level DP at epsilon 10); return its Flower run id.

    Fails unless it exits 0 and leaves no process of its own running.
    """
    marker = uuid.uuid4().hex
    try:
        # A larger budget than the default keeps 2 rounds' noise from masking progress.
        proc = subprocess.run(
            [str(FEDCARE), "deploy-local", "--hospitals", str(HOSPITALS), "--task", "csv",
             "--rounds", str(ROUNDS), "--out", str(out), "--epsilon", "10", "--timeout", "900",
             *extra], env={**os.environ, MARKER: marker}, capture_output=True, text=True,
            timeout=1200)
        survivors = wait_until_gone(marker, 20.0)
    finally:
        kill_marked(marker)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert survivors == [], f"processes left running after deploy-local: {survivors}"
    found = re.search(r"run (\d+) finished", " ".join((proc.stdout + proc.stderr).split()))
    assert found, proc.stderr[-3000:]
    return found.group(1)


@pytest.fixture(scope="module")
def deployments() -> Iterator[Deployments]:
    """Deploy, read every hospital's disclosure log, deploy again with --force.

    The directory has a short path (a Unix socket's is at most 107 bytes); removed after.
    """
    out = Path(tempfile.mkdtemp(prefix="fc-")) / "d"
    try:
        first = _deploy(out)
        logs = _check_logs(out, [first])
        second = _deploy(out, "--force")
        [previous] = list(out.glob("previous-*"))
        yield Deployments(out, previous, (first, second), logs)
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def test_deploy_local_csv_three_hospitals_tls_and_authentication(deployments):
    out, first = deployments.out, deployments.first
    with open(first / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["round"] for row in rows] == [str(r) for r in range(1, ROUNDS + 1)]
    assert all(row["participants"] == str(HOSPITALS) for row in rows)
    # Under DP only the final model is evaluated, as one DP release per hospital (no loss sum
    # leaves): the last row carries the released pooled accuracy, a noisy estimate.
    assert rows[-1]["pooled_accuracy"] not in ("", "nan"), f"no DP evaluation: {rows[-1]}"
    assert (first / "run" / "model.keras").is_file()
    # The server learnt each node's hospital from its registered SuperNode name (Flower's
    # NodeInfo.name through the Runtime API), not from what the replies claimed.
    identities = json.loads((first / "run" / "identities.json").read_text())
    assert sorted(i["hospital"] for i in identities.values()) == list(NAMES)
    assert all(i["bound_by"] == "registered name" for i in identities.values()), identities

    # TLS and SuperNode authentication were on, and each hospital used its own files.
    superlink_log = (first / "logs" / "superlink.log").read_text()
    assert "running on https://" in superlink_log
    assert "SuperNode authentication is disabled" not in superlink_log
    data_paths, ledgers = set(), set()
    for index, name in enumerate(NAMES):
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
    for name in NAMES:
        node_log = (first / "logs" / f"{name}.log").read_text()
        assert "Receiving: train message" in node_log
        assert "Start `flwr-clientapp` process" not in node_log
        # ... handed to the hospital's fork server: each message a child process of its own,
        # on fedcare-supernode's short idle poll.
        server_log = (first / "logs" / f"{name}-clientapp-server.log").read_text()
        forked = [line.split("ClientApp process ")[1].split()[0]
                  for line in server_log.splitlines() if line.endswith(" forked")]
        assert len(forked) == node_log.count("Receiving: ") > 0, server_log
        assert len(set(forked)) == len(forked)
        assert "running the ClientApp in this process instead" not in node_log
        assert "fedcare-supernode: flower-supernode with a 0.25 s idle poll" in node_log
    admin = tomllib.loads((out / "flower-home" / "config.toml").read_text())
    assert admin["superlink"]["fedcare"]["root-certificates"] == str(out / "certs" / "ca.crt")


def _check_logs(out: Path, run_ids: list[str]) -> dict[str, list[dict]]:
    """Check every hospital's disclosure log against its ledger and the last run's rounds.

    Each log verifies against its chain and the anchor in the hospital's head file; every
    request record carries a deployed run's Flower run id and the hospital's registered node
    id; every ledger entry is recorded once, as charged by the request that made it; every
    round of the last run has the hospital's train record (answered, or declined once an
    earlier run spent the budget). Returns each hospital's records.
    """
    with open(out / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    logs = {}
    for name in NAMES:
        ledger = PrivacyLedger.read(out / "ledgers" / f"{name}.json",
                                    head_path=out / "hospitals" / name / "ledger.head")
        verification = verify_beside(ledger)
        assert verification.ok and verification.unanchored == 0, verification.problems
        requests = [r for r in verification.records if r["event"] == "request"]
        assert {str(r["flower"]["run_id"]) for r in requests} == set(run_ids)
        assert len({r["flower"]["message_id"] for r in requests}) == len(requests)
        for run_id in run_ids:  # each deployment registers the hospital's node anew
            assert len({r["flower"]["node_id"] for r in requests
                        if str(r["flower"]["run_id"]) == run_id}) == 1
        charged = Counter((e["run"], e["round"], e["level"], e["track"]) for r in requests
                          for e in r.get("releases", []) if e["charged"] == "this request")
        assert charged == Counter(entry.key for entry in ledger.entries)
        last_run = [r for r in requests if str(r["flower"]["run_id"]) == run_ids[-1]]
        asked = {r["fedcare"]["round"] for r in last_run if r["kind"] == "train"}
        assert asked == {int(row["round"]) for row in rows}, [  # answered or declined
            (r["kind"], r["outcome"], r["fedcare"], r.get("reason")) for r in last_run]
        logs[name] = verification.records
    return logs


def test_a_deployed_run_and_a_forced_second_one_are_in_every_hospitals_log(deployments):
    out, before = deployments.out, deployments.logs_after_first

    after = _check_logs(out, list(deployments.run_ids))

    for name in NAMES:
        assert after[name][:len(before[name])] == before[name]  # appended, never rewritten
        first_run = [r for r in before[name] if r["event"] == "request"]
        assert any(r["outcome"] == "answered" for r in first_run)
    assert (deployments.first / "run" / "metrics.csv").is_file()  # the first run, set aside


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
