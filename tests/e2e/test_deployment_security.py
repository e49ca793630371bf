"""Real processes: a SuperLink with TLS and SuperNode authentication keeps strangers out.

One ``flower-superlink`` (TLS with the consortium's certificates, ``--enable-supernode-auth``,
a free localhost port, a private FLWR_HOME) serves every check. Its certificate names only
``localhost``, so the same SuperNode, CA and key that join when dialling ``localhost`` must
fail when dialling ``127.0.0.1``: that isolates the host-name check. Hospitals are registered
and unregistered with the admin's own commands (``flwr supernode register/unregister``).

In Flower 1.42 a SuperNode presenting an unregistered key is refused even without
``--enable-supernode-auth``; what the flag adds is that a SuperNode cannot register itself
(the anonymous check fails without it). Registering needs nothing but the public ``ca.crt``:
the open-source Control API has no account authentication (see docs/consortium-admin.md).

Both sides run with ``--isolation process``: no app runs here, so no SuperExec is started.
Every process carries an environment marker and is stopped by the fixture, pass or fail; each
SuperNode that must fail is bounded by ``--max-wait-time`` and a subprocess timeout.
"""

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.auth_keys import create_hospital_keys
from server.certificates import create_consortium

sys.path.insert(0, str(Path(__file__).parent))
from processes import (  # noqa: E402
    free_port,
    marked_pids,
    start_marked,
    stop_marked,
    wait_for_text,
)

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
SUPERLINK_READY = "Uvicorn running on https://"
SUPERNODE_JOINED = "SuperNode ID:"
REFUSED_EXIT = "Exit Code: 305"  # Flower: "Failed to initialize the connection to the SuperLink"
JOIN_SECONDS = 40.0
# A refused SuperNode gives up after --max-wait-time; the subprocess timeout is the backstop.
MAX_WAIT_SECONDS = 8
REFUSAL_TIMEOUT = 45.0


@dataclass
class Federation:
    """A running SuperLink and what the tests need to dial it."""

    root: Path
    env: dict[str, str]
    marker: str
    port: int
    ca_crt: Path
    superlink_log: Path
    keys: Path

    def flwr(self, *args: str) -> dict:
        """Run an admin ``flwr`` command against this SuperLink; return its JSON answer."""
        proc = subprocess.run([str(VENV_BIN / "flwr"), *args, "consortium", "--format", "json"],
                              cwd=self.root, env={**self.env, "FEDCARE_TEST_MARKER": self.marker},
                              capture_output=True, text=True, timeout=60)
        start = proc.stdout.find("{")
        assert start >= 0, f"flwr {args}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout[start:])

    def register(self, name: str) -> tuple[Path, int]:
        """Make a hospital's keys and register its public key; return (private key, node id)."""
        files = create_hospital_keys(self.keys, name)
        answer = self.flwr("supernode", "register", str(files.pub))
        assert answer.get("success"), answer
        return files.key, int(answer["node-id"])

    def node_status(self, node_id: int) -> str:
        """Return the SuperLink's status for a node (registered, online, unregistered, ...)."""
        nodes = self.flwr("supernode", "list")["nodes"]
        return next(node["status"] for node in nodes if int(node["node-id"]) == node_id)

    def start_supernode(self, name: str, *, key: Path | None, host: str = "localhost",
                        root_certificates: Path | None = None) -> tuple[subprocess.Popen, Path]:
        """Start a hospital's ``flower-supernode``; return the process and its log file.

        Without ``key`` the SuperNode makes a throw-away key and asks the SuperLink to
        register it (Flower's behaviour when node authentication is off).
        """
        log = self.root / f"supernode-{name}.log"
        argv = [str(VENV_BIN / "flower-supernode"), "--superlink", f"{host}:{self.port}",
                "--isolation", "process", "--host", "127.0.0.1", "--port", str(free_port()),
                "--max-wait-time", str(MAX_WAIT_SECONDS)]
        if key is not None:
            argv += ["--auth-supernode-private-key", str(key)]
        if root_certificates is not None:
            argv += ["--root-certificates", str(root_certificates)]
        return start_marked(argv, marker=self.marker, log_path=log, cwd=self.root,
                            env=self.env), log


def _wait_refused(process: subprocess.Popen, log: Path) -> str:
    """Wait for a SuperNode that must fail; return its log (the process is reaped)."""
    try:
        process.wait(timeout=REFUSAL_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"the SuperNode still ran after {REFUSAL_TIMEOUT:.0f} s:\n"
                    f"{log.read_text()[-3000:]}")
    return log.read_text(errors="replace")


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """Start the SuperLink (TLS + node authentication); stop every marked process at the end."""
    root = tmp_path_factory.mktemp("deployment-security")
    certs = create_consortium(root / "certs", ["localhost"], days=2)
    home = root / "flwr-home"
    home.mkdir()
    port = free_port()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "consortium"\n\n[superlink.consortium]\n'
        f'address = "localhost:{port}"\nroot-certificates = "{certs.ca_crt}"\n')
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "RAY_USAGE_STATS_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    marker = uuid.uuid4().hex
    log = root / "superlink.log"
    superlink = start_marked(
        [str(VENV_BIN / "flower-superlink"), "--ssl-ca-certfile", str(certs.ca_crt),
         "--ssl-certfile", str(certs.server_crt), "--ssl-keyfile", str(certs.server_key),
         "--enable-supernode-auth", "--isolation", "process",
         "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
         "--port", str(port)],
        marker=marker, log_path=log, cwd=home, env=env)
    try:
        assert wait_for_text(log, SUPERLINK_READY, seconds=60, process=superlink), (
            f"the SuperLink did not start:\n{log.read_text()[-3000:]}")
        yield Federation(root=root, env=env, marker=marker, port=port, ca_crt=certs.ca_crt,
                         superlink_log=log, keys=root / "keys")
    finally:
        survivors = stop_marked(marker)
        superlink.wait(timeout=10)
        assert survivors == [], f"processes left running: {survivors}"


def test_registered_hospital_joins(federation):
    # Arrange: the positive control for every refusal below
    key, node_id = federation.register("registered")
    assert federation.node_status(node_id) == "registered"
    # Act
    process, log = federation.start_supernode("registered", key=key,
                                              root_certificates=federation.ca_crt)
    # Assert
    try:
        assert wait_for_text(log, f"{SUPERNODE_JOINED} {node_id}", seconds=JOIN_SECONDS,
                             process=process), log.read_text()[-3000:]
        assert process.poll() is None
        assert federation.node_status(node_id) == "online"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_unregistered_hospital_key_is_refused(federation):
    # Arrange: a well-formed key that the admin never registered
    stranger = create_hospital_keys(federation.keys, "stranger")
    # Act
    process, log = federation.start_supernode("stranger", key=stranger.key,
                                              root_certificates=federation.ca_crt)
    output = _wait_refused(process, log)
    # Assert: TLS worked, activation was refused by the SuperLink
    assert process.returncode != 0
    assert REFUSED_EXIT in output and "Failed to activate SuperNode" in output, output[-3000:]
    assert SUPERNODE_JOINED not in output
    assert "No SuperNode found with the given public key" in federation.superlink_log.read_text()


def test_supernode_without_a_key_cannot_register_itself(federation):
    # Act: an anonymous SuperNode, which would register itself if authentication were off
    process, log = federation.start_supernode("anonymous", key=None,
                                              root_certificates=federation.ca_crt)
    output = _wait_refused(process, log)
    # Assert
    assert process.returncode != 0 and REFUSED_EXIT in output, output[-3000:]
    assert SUPERNODE_JOINED not in output
    assert "All SuperNodes must be registered via the CLI" in output, output[-3000:]


@pytest.mark.parametrize("trust", ["another CA", "no CA"])
def test_supernode_without_the_consortium_ca_cannot_connect(federation, tmp_path, trust):
    # Arrange: a registered hospital that trusts another CA, or only the system's CAs
    key, node_id = federation.register(f"untrusting-{trust.replace(' ', '-')}")
    other_ca = create_consortium(tmp_path / "other", ["localhost"]).ca_crt
    # Act
    process, log = federation.start_supernode(
        f"untrusting-{trust.replace(' ', '-')}", key=key,
        root_certificates=other_ca if trust == "another CA" else None)
    output = _wait_refused(process, log)
    # Assert
    assert process.returncode != 0 and REFUSED_EXIT in output, output[-3000:]
    assert "certificate verify failed" in output, output[-3000:]
    assert federation.node_status(node_id) == "registered"  # never came online


def test_server_certificate_for_another_host_name_fails(federation):
    # Arrange: right CA, registered key; the certificate names localhost, not 127.0.0.1
    key, node_id = federation.register("wrong-host")
    # Act
    process, log = federation.start_supernode("wrong-host", key=key, host="127.0.0.1",
                                              root_certificates=federation.ca_crt)
    output = _wait_refused(process, log)
    # Assert
    assert process.returncode != 0 and REFUSED_EXIT in output, output[-3000:]
    assert "certificate is not valid for '127.0.0.1'" in output, output[-3000:]
    assert federation.node_status(node_id) == "registered"


def test_unregistering_a_hospital_drops_its_running_supernode(federation):
    # Arrange
    key, node_id = federation.register("leaving")
    process, log = federation.start_supernode("leaving", key=key,
                                              root_certificates=federation.ca_crt)
    try:
        assert wait_for_text(log, f"{SUPERNODE_JOINED} {node_id}", seconds=JOIN_SECONDS,
                             process=process), log.read_text()[-3000:]
        # Act
        answer = federation.flwr("supernode", "unregister", str(node_id))
        # Assert: the SuperLink answers the node 401 from then on and the SuperNode stops
        assert answer.get("success"), answer
        process.wait(timeout=REFUSAL_TIMEOUT)
        assert federation.node_status(node_id) == "unregistered"
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)
    assert process.pid not in marked_pids(federation.marker)
