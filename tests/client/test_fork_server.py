"""The ClientApp fork server as a real process, reached by the real ``fedcare-clientapp``.

A process boundary is the point: each message's ClientApp must run in a process of its own,
forked by a server that runs one thread and holds no hospital state. One server per module
(it imports Flower's runtime once, seconds on a loaded machine); the fixture stops it by pid,
and every launcher or child a test starts is stopped by that test, by pid, pass or fail.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.fork_launcher import ForkServerUnavailable, ping
from client.fork_protocol import (
    KEY_VARIABLE,
    SERVER_VARIABLE,
    launcher_handshake,
    read_key,
    receive_json,
    send_json,
)
from client.fork_server import HEAVY_MODULES, fork_safety_problems

VENV_BIN = Path(sys.executable).parent
READY_SECONDS = 120.0
FALLBACK = "running the ClientApp in this process instead"


@dataclass
class Server:
    """A running fork server: its process, socket, key file and log."""

    process: subprocess.Popen[bytes]
    socket_path: Path
    key_file: Path
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a SuperNode gives its flwr-clientapp to use this server."""
        return {**os.environ, SERVER_VARIABLE: str(self.socket_path),
                KEY_VARIABLE: str(self.key_file), **extra}


def _stop(pids: list[int]) -> None:
    """SIGKILL each pid that still runs (test cleanup)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if _parent(int(entry.name)) == pid:
                    found.append(int(entry.name))
    return found


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise ValueError(f"no PPid line for {pid}")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("fork")
    socket_path, key_file, log = (directory / "clientapp.sock", directory / "clientapp.authkey",
                                  directory / "server.log")
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [str(VENV_BIN / "fedcare-clientapp-server"), "--socket", str(socket_path),
             "--authkey-file", str(key_file)], stdout=handle, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            assert process.poll() is None, log.read_text()
            try:
                ping(socket_path, key_file)
                break
            except ForkServerUnavailable:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield Server(process, socket_path, key_file, log)
    finally:
        _stop(_children(process.pid))
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _launch(server: Server, *argv: str, env: dict[str, str] | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the real ``fedcare-clientapp ARGV`` (what the SuperExec starts) to its end."""
    launcher = subprocess.Popen([str(VENV_BIN / "fedcare-clientapp"), *argv],
                                env=env if env is not None else server.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = launcher.communicate(timeout=timeout)
    finally:
        _stop([launcher.pid] if launcher.poll() is None else [])
    return subprocess.CompletedProcess(launcher.args, launcher.returncode, out, err)


def test_the_server_runs_one_thread_and_holds_no_runtime_or_hospital_state(server):
    state = ping(server.socket_path, server.key_file)
    assert state["pid"] == server.process.pid
    assert state["python_threads"] == 1 and state["os_threads"] == 1
    assert state["problems"] == []
    modules = set(state["modules"])
    assert "flwr.supernode.runtime.run_clientapp" in modules  # the runtime is preloaded
    assert not {m for m in modules if m.split(".")[0] in HEAVY_MODULES}
    own = {m for m in modules if m.split(".")[0] in ("client", "common")}
    assert own <= {"client", "client.fork_server", "client.fork_protocol",
                   "client.clientapp_process"}, own


def test_each_message_runs_in_a_child_of_its_own_and_its_exit_status_is_relayed(server):
    first = _launch(server, "--bogus")
    second = _launch(server, "--help")
    # Flower's argument parser ran in the child and wrote to the launcher's own stderr/stdout.
    assert first.returncode == 2, first.stderr
    assert "flwr-clientapp: error:" in first.stderr and FALLBACK not in first.stderr
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("usage: flwr-clientapp")
    forked = [int(line.split("ClientApp process ")[1].split()[0])
              for line in server.log.read_text().splitlines() if line.endswith("forked")]
    assert len(forked) >= 2 and len(set(forked)) == len(forked)
    assert server.process.pid not in forked


def test_a_running_child_is_the_servers_child_and_its_signal_status_is_relayed(server):
    with socket.socket() as probe:  # a Runtime API address where nothing listens
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    launcher = subprocess.Popen(
        [str(VENV_BIN / "fedcare-clientapp"), "--runtime-api-address", address, "--token", "t",
         "--insecure"], env=server.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not children and time.monotonic() < deadline:
            children = list(ping(server.socket_path, server.key_file)["children"])
            time.sleep(0.1)
        assert len(children) == 1, "the server reported no running ClientApp process"
        child = children[0]
        assert child not in (launcher.pid, server.process.pid, os.getpid())
        assert _parent(child) == server.process.pid  # forked by the server, not the launcher
        os.kill(child, signal.SIGKILL)  # Flower's run_clientapp retries the address forever
        _, err = launcher.communicate(timeout=30)
        assert launcher.returncode == 128 + signal.SIGKILL, err
    finally:
        _stop([*children, launcher.pid])


def test_sigterm_to_the_launcher_reaches_the_child(server):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    launcher = subprocess.Popen(
        [str(VENV_BIN / "fedcare-clientapp"), "--runtime-api-address", address, "--token", "t",
         "--insecure"], env=server.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not children and time.monotonic() < deadline:
            children = list(ping(server.socket_path, server.key_file)["children"])
            time.sleep(0.1)
        assert len(children) == 1
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=60)
        assert launcher.returncode >= 0  # the launcher handled SIGTERM (it was not killed) ...
        assert ping(server.socket_path, server.key_file)["children"] == []  # and the child ended
    finally:
        _stop([*children, launcher.pid])


def test_a_wrong_key_is_refused_and_the_server_keeps_serving(server, tmp_path):
    wrong = tmp_path / "wrong.authkey"
    wrong.write_text("cd" * 32)
    wrong.chmod(0o600)
    with pytest.raises(ForkServerUnavailable, match="refused the key"):
        ping(server.socket_path, wrong)
    done = _launch(server, "--help", env=server.env(**{KEY_VARIABLE: str(wrong)}))
    assert done.returncode == 0  # nothing ran at the server: the launcher ran it itself
    assert "refused the key" in done.stderr and FALLBACK in done.stderr
    assert "wrong key" in server.log.read_text()
    assert ping(server.socket_path, server.key_file)["pong"] is True


def test_a_malformed_request_is_refused_with_a_message(server):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(server.socket_path))
        launcher_handshake(sock, read_key(server.key_file))
        send_json(sock, {"kind": "run", "argv": "--token t", "env": {}, "cwd": "/",
                         "umask": 18})
        answer = receive_json(sock)
    assert str(answer["refused"]).startswith("malformed request: argv must be a list")
    assert ping(server.socket_path, server.key_file)["problems"] == []


def test_without_a_server_the_launcher_falls_back_and_says_so(server, tmp_path):
    absent = tmp_path / "absent.sock"
    done = _launch(server, "--help", env=server.env(**{SERVER_VARIABLE: str(absent)}))
    assert done.returncode == 0 and done.stdout.startswith("usage: flwr-clientapp")
    assert f"no ClientApp fork server listens at {absent}" in done.stderr
    assert FALLBACK in done.stderr


def test_fork_safety_problems_name_threads_runtimes_and_hospital_state():
    own = ["client", "client.fork_server", "client.fork_protocol", "client.clientapp_process"]
    assert fork_safety_problems(python_threads=1, os_threads=1, modules=own) == []
    assert "2 OS threads" in fork_safety_problems(python_threads=1, os_threads=2,
                                                  modules=own)[0]
    assert "tensorflow" in fork_safety_problems(python_threads=1, os_threads=1,
                                                modules=[*own, "tensorflow.python"])[0]
    assert "client.worker_link" in fork_safety_problems(
        python_threads=1, os_threads=1, modules=[*own, "client.worker_link"])[0]
    assert "common.dp.ledger" in fork_safety_problems(
        python_threads=1, os_threads=1, modules=[*own, "common.dp.ledger"])[0]


def test_a_server_that_is_not_fork_safe_refuses_to_start(tmp_path):
    code = ("import threading, time; threading.Thread(target=time.sleep, args=(60,), "
            "daemon=True).start(); from client.fork_server import main; "
            f"main(['--socket', {str(tmp_path / 's.sock')!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    assert "not fork-safe after its imports: 2 Python and" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s.sock").exists()
