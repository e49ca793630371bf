"""End to end: `flwr run .` as docs/simulation.md runs it (Flower 1.42 CLI), on a private,
local SuperLink.

The test runs the documented commands with a 2-round, 4-hospital config in a temporary
FLWR_HOME, waits for the run to finish, checks metrics.csv, and stops the local SuperLink
that `flwr run` started in the background, plus every process it started.

Every process the test starts inherits a unique environment marker; cleanup finds them by
that marker and signals them by pid (never by name). The local SuperLink listens on a free
port chosen here, so an already running SuperLink (another FLWR_HOME, another engineer) is
never reused.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from processes import marked_pids, signal_all, wait_gone  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # flwr, flower-superlink, flower-superexec, ...
FLWR = VENV_BIN / "flwr"
MARKER = "FEDCARE_FLWR_RUN_TEST_MARKER"
ROUNDS = 2
HOSPITALS = 4
RUN_TIMEOUT = 240.0  # seconds from submission to a finished run (observed: 45 s idle, 100 s busy)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _marked(marker: str) -> list[int]:
    return marked_pids(marker, MARKER)


def _is_superlink(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]
    except OSError:
        return False
    return any(Path(arg.decode(errors="replace")).name == "flower-superlink" for arg in argv)


def stop_local_superlink(marker: str) -> list[int]:
    """Stop the local SuperLink and everything the test started; return surviving pids.

    SIGTERM to the SuperLink lets it shut down its SuperExec (and that one its ServerApp and
    simulation processes); whatever still carries the marker afterwards gets SIGTERM, then
    SIGKILL. The SuperLink is detached from the test (its parent exits), so after it exits it
    may stay a zombie until init reaps it; zombies count as stopped.
    """
    superlinks = [pid for pid in _marked(marker) if _is_superlink(pid)]
    signal_all(superlinks, signal.SIGTERM)
    wait_gone(superlinks, 15.0)
    rest = _marked(marker)
    signal_all(rest, signal.SIGTERM)
    rest = wait_gone(rest, 5.0)
    signal_all(rest, signal.SIGKILL)
    return wait_gone(rest, 5.0)


def _json_payload(proc: subprocess.CompletedProcess) -> dict:
    """Parse the JSON a `flwr ... --format json` command printed on stdout."""
    start = proc.stdout.find("{")
    assert start >= 0, f"no JSON (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout[start:])


@pytest.fixture
def flwr_env(tmp_path):
    """docs/simulation.md's environment, with a temporary FLWR_HOME and a private SuperLink port.

    Yields ``(env, marker)``; on teardown (pass or fail) stops the local SuperLink and every
    process carrying the marker.
    """
    marker = uuid.uuid4().hex
    env = {
        **os.environ,
        # `flwr` starts `flower-superlink` by name: the virtualenv's bin must be on PATH.
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        # flwr run's nodes are hospitals with the built-in defaults: their ledgers go under
        # FEDCARE_HOME, kept across runs; the test's own one, so no run spends another's budget.
        "FEDCARE_HOME": str(tmp_path / "fedcare-home"),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),  # only appears in its command line
        MARKER: marker,
    }
    try:
        yield env, marker
    finally:
        survivors = stop_local_superlink(marker)
        assert survivors == [], f"processes left running: {survivors}"


def _flwr(env: dict, *args: str, cwd: Path = REPO, timeout: float = 90
          ) -> subprocess.CompletedProcess:
    return subprocess.run([str(FLWR), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_flwr_run_two_rounds_four_hospitals(flwr_env, tmp_path):
    env, marker = flwr_env
    pyproject = REPO / "pyproject.toml"
    # A [tool.flwr.federations] table would make `flwr run .` rewrite pyproject.toml.
    assert "federations" not in tomllib.loads(pyproject.read_text())["tool"]["flwr"], (
        "pyproject.toml has [tool.flwr.federations]; `flwr run .` would comment it out"
    )
    out_dir = tmp_path / "run"
    assert "'" not in str(out_dir)  # a TOML literal string cannot hold a single quote

    # Start the local SuperLink from inside FLWR_HOME (any flwr command starts it): Ray puts
    # the SuperLink's working directory first on the simulation workers' sys.path, so started
    # from the repository root the ClientApps would import this working tree, not the bundle.
    home = Path(env["FLWR_HOME"])
    home.mkdir()
    started = _flwr(env, "ls", "--format", "json", cwd=home)
    assert _json_payload(started).get("success"), started.stdout
    superlinks = [pid for pid in _marked(marker) if _is_superlink(pid)]
    assert len(superlinks) == 1
    assert Path(f"/proc/{superlinks[0]}/cwd").resolve() == home.resolve()

    submitted = _flwr(
        env, "run", ".",
        "--run-config", f"num-server-rounds={ROUNDS} out-dir='{out_dir}'",
        "--federation-config", f"num-supernodes={HOSPITALS}",
        "--format", "json",
    )
    payload = _json_payload(submitted)
    assert submitted.returncode == 0 and payload.get("success"), submitted.stdout
    run_id = payload["run-id"]

    deadline = time.monotonic() + RUN_TIMEOUT
    status, details, logs = "", "", ""
    try:
        # `flwr log` streams the run's output and returns once the run has finished; it is
        # called again only if its stream ended early.
        while not status.startswith("finished") and time.monotonic() < deadline:
            try:
                streamed = _flwr(env, "log", run_id, "--stream",
                                 timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                status, details = "timed out", f"not finished {RUN_TIMEOUT:.0f} s after submission"
                break
            logs = streamed.stdout + streamed.stderr
            listed = _json_payload(_flwr(env, "ls", "--run-id", run_id, "--format", "json"))
            status, details = listed["runs"][0]["status"], listed["runs"][0]["status-details"]
            if streamed.returncode != 0:
                break
        if not status.startswith("finished"):
            _flwr(env, "stop", run_id, timeout=30)
        assert status == "finished:completed", f"{status!r}: {details}\n{logs[-5000:]}"
    finally:
        # What Flower's migration writes into pyproject.toml when it rewrites it.
        assert "CONFIGURATION MIGRATION NOTICE" not in pyproject.read_text()

    with open(out_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["round"] for row in rows] == [str(r) for r in range(1, ROUNDS + 1)]
    assert all(row["participants"] == str(HOSPITALS) for row in rows)
    # Simulated nodes are the researcher's hospitals: their ledgers were made on first use,
    # each with its head file apart, under FEDCARE_HOME/heads.
    fedcare_home = Path(env["FEDCARE_HOME"])
    ledgers = sorted(p.stem for p in (fedcare_home / "ledgers").glob("*.json"))
    assert len(ledgers) == HOSPITALS
    assert sorted(p.stem for p in (fedcare_home / "heads").glob("*.head")) == ledgers

    # The run used the installed app bundle, which carries the vendored data file.
    apps = list((home / "apps").glob("fedcare.fedcare.*"))
    assert len(apps) == 1
    assert (apps[0] / "common" / "tasks" / "data" / "heart_disease.json").is_file()
    assert (apps[0] / "server" / "app.py").is_file()

    # Stopping the local SuperLink leaves nothing the test started running.
    assert _marked(marker), "expected the detached local SuperLink to be running"
    assert stop_local_superlink(marker) == []
