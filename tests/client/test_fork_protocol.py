"""The fork server's wire protocol (client.fork_protocol): keys, handshake, request, stdio."""

import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from client import fork_protocol
from client.fork_protocol import (
    MAGIC,
    MAX_FRAME,
    KeyRefused,
    ProtocolError,
    ensure_key,
    launcher_handshake,
    parse_request,
    proof,
    read_key,
    receive_frame,
    receive_stdio,
    send_frame,
    send_stdio,
    server_handshake,
    shell_status,
)


def _run_request(tmp_path: Path, **changes: object) -> dict[str, object]:
    request: dict[str, object] = {"kind": "run", "argv": ["--token", "t", "--insecure"],
                                  "env": {"PATH": "/usr/bin", "FLWR_HOME": str(tmp_path)},
                                  "cwd": str(tmp_path), "umask": 0o022}
    request.update(changes)
    return request


def _handshake(server_key: bytes, launcher_key: bytes) -> tuple[BaseException | None,
                                                                 BaseException | None]:
    """Run both sides of the handshake over a socket pair; return each side's error."""
    server_end, launcher_end = socket.socketpair()
    errors: dict[str, BaseException | None] = {"server": None}

    def serve() -> None:
        try:
            server_handshake(server_end, server_key)
        except (KeyRefused, ProtocolError, OSError) as error:
            errors["server"] = error

    thread = threading.Thread(target=serve)
    thread.start()
    launcher_error = None
    try:
        launcher_handshake(launcher_end, launcher_key)
    except (KeyRefused, ProtocolError) as error:
        launcher_error = error
    thread.join(timeout=10)
    server_end.close()
    launcher_end.close()
    return errors["server"], launcher_error


def test_ensure_key_makes_a_private_random_key_once(tmp_path):
    path = tmp_path / "keys" / "clientapp.authkey"
    key = ensure_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 16
    assert ensure_key(path) == key  # kept, not replaced
    assert ensure_key(tmp_path / "other.authkey") != key


@pytest.mark.parametrize(("text", "mode", "match"), [
    ("ab" * 32, 0o640, "readable by group or others"),
    ("not hex at all", 0o600, "not hex"),
    ("ab" * 8 + "a", 0o600, "not hex"),
    ("ab" * 15, 0o600, "holds 15 bytes"),
], ids=["group-readable", "not-hex", "odd-hex", "short"])
def test_read_key_refuses_unusable_key_files(tmp_path, text, mode, match):
    path = tmp_path / "k.authkey"
    path.write_text(text)
    path.chmod(mode)
    with pytest.raises(ValueError, match=match):
        read_key(path)
    with pytest.raises(ValueError, match="cannot read it"):
        read_key(tmp_path / "missing.authkey")


def test_handshake_succeeds_with_the_same_key():
    assert _handshake(b"k" * 32, b"k" * 32) == (None, None)


def test_handshake_refuses_a_wrong_key_on_both_sides():
    server_error, launcher_error = _handshake(b"k" * 32, b"x" * 32)
    assert isinstance(server_error, KeyRefused)
    assert isinstance(launcher_error, KeyRefused)
    assert "refused the key" in str(launcher_error) and "wrong key" in str(launcher_error)


def test_a_servers_proof_that_begins_with_a_brace_is_still_a_proof(monkeypatch):
    # The server's proof is 32 HMAC bytes: one in 256 begins with "{", the first byte of a
    # refusal frame. Fix the launcher's nonce and pick a key whose proof begins with it.
    nonce = b"\x01" * 32
    monkeypatch.setattr(fork_protocol.os, "urandom", lambda size: b"\x01" * size)
    key = next(candidate for candidate in (i.to_bytes(32, "big") for i in range(1, 10_000))
               if proof(candidate, b"server", nonce).startswith(b"{"))
    assert _handshake(key, key) == (None, None)


def test_launcher_refuses_a_server_that_does_not_prove_the_key():
    server_end, launcher_end = socket.socketpair()
    with server_end, launcher_end:
        send_frame(server_end, MAGIC + b"n" * 32)
        send_frame(server_end, b"\0" * 32)  # answers the challenge with a made-up proof
        with pytest.raises(KeyRefused, match="did not prove"):
            launcher_handshake(launcher_end, b"k" * 32)


def test_launcher_refuses_a_peer_that_is_not_a_fork_server():
    server_end, launcher_end = socket.socketpair()
    with server_end, launcher_end:
        send_frame(server_end, b"HTTP/1.1 400 Bad Request\r\n")
        with pytest.raises(ProtocolError, match="not a fedcare ClientApp fork server"):
            launcher_handshake(launcher_end, b"k" * 32)


def test_a_frame_over_the_limit_is_refused_before_it_is_read():
    one, two = socket.socketpair()
    with one, two:
        one.sendall((MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(ProtocolError, match="over the limit"):
            receive_frame(two)


def test_a_valid_run_request_parses(tmp_path):
    request = parse_request(_run_request(tmp_path))
    assert request.kind == "run"
    assert request.argv == ("--token", "t", "--insecure")
    assert dict(request.env)["FLWR_HOME"] == str(tmp_path)
    assert parse_request(request.to_json()) == request  # round trip


@pytest.mark.parametrize(("changes", "match"), [
    ({"kind": "exec"}, "kind must be"),
    ({"argv": "--token t"}, "argv must be a list of strings"),
    ({"argv": ["--token", 7]}, "argv must be a list of strings"),
    ({"argv": ["a\0b"]}, "NUL"),
    ({"argv": ["x"] * 65}, "at most 64"),
    ({"env": ["PATH=/usr/bin"]}, "env must be an object"),
    ({"env": {"A=B": "c"}}, "name with '='"),
    ({"env": {"A": 1}}, "env's values must be a list of strings"),
    ({"cwd": "relative/dir"}, "cwd must be an existing directory's absolute path"),
    ({"cwd": "/no/such/directory"}, "cwd must be an existing directory's absolute path"),
    ({"umask": True}, "umask must be an integer"),
    ({"umask": 0o1000}, "umask must be an integer"),
    ({"extra": 1}, "exactly the fields"),
], ids=["kind", "argv-str", "argv-int", "argv-nul", "argv-long", "env-list", "env-name",
        "env-value", "cwd-relative", "cwd-missing", "umask-bool", "umask-range", "extra-field"])
def test_a_malformed_request_is_refused_naming_the_field(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        parse_request(_run_request(tmp_path, **changes))


def test_stdio_descriptors_arrive_as_the_same_open_files(tmp_path):
    files = [open(tmp_path / name, "w+b") for name in ("in", "out", "err")]  # noqa: SIM115
    one, two = socket.socketpair()
    try:
        send_stdio(one, (files[0].fileno(), files[1].fileno(), files[2].fileno()))
        received = receive_stdio(two)
        for original, descriptor in zip(files, received, strict=True):
            assert descriptor != original.fileno()
            assert os.fstat(descriptor).st_ino == os.fstat(original.fileno()).st_ino
            os.close(descriptor)
    finally:
        one.close()
        two.close()
        for handle in files:
            handle.close()


def test_stdio_with_too_few_descriptors_is_refused(tmp_path):
    one, two = socket.socketpair()
    with one, two, open(tmp_path / "only", "wb") as handle:
        socket.send_fds(one, [b"\0"], [handle.fileno()])
        with pytest.raises(ProtocolError, match="received 1"):
            receive_stdio(two)


@pytest.mark.parametrize(("code", "expected"), [
    ("import os; os._exit(3)", 3),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 137),
    ("pass", 0),
], ids=["exit-3", "sigkill", "exit-0"])
def test_shell_status_of_a_real_child(code, expected):
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        _, status = os.waitpid(child.pid, 0)
    finally:
        child.returncode = 0  # reaped above: keep Popen from waiting on it again
    assert shell_status(status) == expected
