"""The ClientApp fork server's wire protocol: key file, handshake, frames and the request.

A hospital's ``flwr-clientapp`` launcher (``client.fork_launcher``) and its pre-started fork
server (``client.fork_server``) talk over a Unix stream socket, one request per connection:

1. server -> launcher: ``MAGIC`` and a 32-byte nonce;
2. launcher -> server: HMAC-SHA256(key, ``b"launcher" + nonce``) and a nonce of its own;
3. server -> launcher: HMAC-SHA256(key, ``b"server" + launcher's nonce``), or a JSON
   ``{"refused": reason}`` frame for a wrong key (both sides prove the key, never send it);
4. launcher -> server: the JSON request (``ForkRequest``: the arguments, environment, working
   directory and umask the SuperExec gave the launcher), then one byte carrying the launcher's
   stdin, stdout and stderr as ``SCM_RIGHTS`` descriptors (the child writes where the launcher
   would have written);
5. server -> launcher: ``{"refused": reason}`` (nothing ran), or ``{"pid": child}`` and, once
   the child has exited, ``{"exit": code}`` (a shell-style status: 128 + N for signal N).

A frame is a 4-byte big-endian length and at most ``MAX_FRAME`` bytes. The key file holds at
least 16 random bytes in hex, mode 0600. Light standard-library imports only (no pathlib,
dataclasses or argparse): the launcher is the process Flower starts for every message, and it
must start in milliseconds. Paths are ``str`` or ``os.PathLike``.
"""

import hashlib
import hmac
import json
import os
import socket
import stat
import struct
from typing import NamedTuple

StrPath = str | os.PathLike[str]

SERVER_VARIABLE = "FEDCARE_CLIENTAPP_SERVER"  # the fork server's socket, in the SuperNode's env
KEY_VARIABLE = "FEDCARE_CLIENTAPP_SERVER_KEY"  # its key file (default: <socket>.authkey)
KEY_SUFFIX = ".authkey"
MAGIC = b"fedcare-clientapp-server/1\n"
NONCE_BYTES = 32
KEY_BYTES = 32
MIN_KEY_BYTES = 16
MAX_FRAME = 1 << 20  # bytes: the request (argv and environment) is a few kB
MAX_SOCKET_PATH = 107  # bytes in sockaddr_un.sun_path on Linux, less the final NUL
MAX_ARGS = 64
HANDSHAKE_SECONDS = 5.0  # each read or write of the handshake and request gives up after this
STDIO = (0, 1, 2)


class ProtocolError(RuntimeError):
    """The peer broke the protocol, refused the request, or the connection failed (says which)."""


class KeyRefused(ProtocolError):
    """The key handshake failed: one side does not hold the other's key."""


def default_key_file(socket_path: StrPath) -> str:
    """The key file used when none is named: ``<socket>.authkey`` next to the socket."""
    return os.fspath(socket_path) + KEY_SUFFIX


def check_socket_path(socket_path: StrPath) -> None:
    """Raise ``ValueError`` if `socket_path` is too long for a Unix socket (naming it)."""
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
        raise ValueError(f"fork server socket path {socket_path} is longer than "
                         f"{MAX_SOCKET_PATH} bytes, the limit of a Unix socket address")


def read_key(path: StrPath) -> bytearray:
    """Return the key in `path` (hex text) as a bytearray the caller may overwrite.

    Raises
    ------
    ValueError
        If the file is unreadable, readable by group or others, or not hex of >= 16 bytes.
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"fork server key file {path}: cannot read it ({error})") from None
    if mode & 0o077:
        raise ValueError(f"fork server key file {path} is readable by group or others "
                         f"(mode {mode:o}); run `chmod 600 {path}`")
    try:
        key = bytearray.fromhex(text)
    except ValueError:
        raise ValueError(f"fork server key file {path} is not hex text") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"fork server key file {path} holds {len(key)} bytes; at least "
                         f"{MIN_KEY_BYTES} needed")
    return key


def ensure_key(path: StrPath) -> bytearray:
    """Return the key in `path`, first creating it (random, 0600, exclusively) if absent."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key(path)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(os.urandom(KEY_BYTES).hex() + "\n")
    return read_key(path)


def send_frame(sock: socket.socket, payload: bytes) -> None:
    """Send one length-prefixed frame."""
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ProtocolError("the connection closed mid-frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def receive_frame(sock: socket.socket) -> bytes:
    """Receive one frame (raises ``ProtocolError`` if it is over ``MAX_FRAME`` or cut short)."""
    (size,) = struct.unpack(">I", _receive_exactly(sock, 4))
    if size > MAX_FRAME:
        raise ProtocolError(f"a frame of {size} bytes is over the limit of {MAX_FRAME}")
    return _receive_exactly(sock, size)


def send_json(sock: socket.socket, value: dict[str, object]) -> None:
    """Send a JSON object as one frame."""
    send_frame(sock, json.dumps(value).encode("utf-8"))


def receive_json(sock: socket.socket) -> dict[str, object]:
    """Receive one JSON-object frame (``ProtocolError`` if it is not one)."""
    try:
        value = json.loads(receive_frame(sock).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"the frame is not JSON ({error})") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"the frame is JSON but not an object: {type(value).__name__}")
    return value


def proof(key: bytes | bytearray, role: bytes, nonce: bytes) -> bytes:
    """HMAC-SHA256 of `role` + `nonce` under `key` (32 bytes)."""
    return hmac.new(key, role + nonce, hashlib.sha256).digest()


def server_handshake(sock: socket.socket, key: bytes | bytearray) -> None:
    """Challenge the launcher on `sock`, then prove the key to it.

    Raises
    ------
    KeyRefused
        If the launcher's proof is wrong (the launcher is told so before the socket closes).
    """
    nonce = os.urandom(NONCE_BYTES)
    send_frame(sock, MAGIC + nonce)
    answer = receive_frame(sock)
    if len(answer) != 2 * NONCE_BYTES or not hmac.compare_digest(
            answer[:NONCE_BYTES], proof(key, b"launcher", nonce)):
        send_json(sock, {"refused": "wrong key: the launcher's key file is not this fork "
                                    "server's"})
        raise KeyRefused("a launcher presented a wrong key")
    send_frame(sock, proof(key, b"server", answer[NONCE_BYTES:]))


def refusal(frame: bytes) -> str:
    """The reason in a ``{"refused": reason}`` frame (the frame itself if it is not one)."""
    try:
        value = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return repr(frame[:200])
    return str(value.get("refused", value)) if isinstance(value, dict) else repr(frame[:200])


def launcher_handshake(sock: socket.socket, key: bytes | bytearray) -> None:
    """Answer the server's challenge on `sock` and check that the server holds the key too.

    Raises
    ------
    ProtocolError
        If the peer is not a fedcare fork server.
    KeyRefused
        If the server refused the key, or did not prove it holds it.
    """
    hello = receive_frame(sock)
    if hello.startswith(b"{"):  # refused before the handshake (another user's process)
        raise KeyRefused(f"the fork server refused the connection: {refusal(hello)}")
    if not hello.startswith(MAGIC) or len(hello) != len(MAGIC) + NONCE_BYTES:
        raise ProtocolError(f"the peer is not a fedcare ClientApp fork server of this version "
                            f"(it said {hello[:40]!r})")
    nonce = os.urandom(NONCE_BYTES)
    send_frame(sock, proof(key, b"launcher", hello[len(MAGIC):]) + nonce)
    answer = receive_frame(sock)
    # The proof first: 32 random-looking bytes begin with "{" once in 256 handshakes.
    if hmac.compare_digest(answer, proof(key, b"server", nonce)):
        return
    if answer.startswith(b"{"):
        raise KeyRefused(f"the fork server refused the key: {refusal(answer)}")
    raise KeyRefused("the fork server did not prove it holds the key")


class ForkRequest(NamedTuple):
    """What a launcher asks for: run ``flwr-clientapp ARGV`` with `env` in `cwd` under `umask`.

    ``kind`` is ``"run"`` (fork a child) or ``"ping"`` (the server answers its own state).
    Immutable (a NamedTuple rather than a dataclass: ``dataclasses`` costs the launcher an
    import of ``inspect``).
    """

    kind: str
    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = "/"
    umask: int = 0o022

    def to_json(self) -> dict[str, object]:
        """The request as its JSON frame's object."""
        return {"kind": self.kind, "argv": list(self.argv), "env": dict(self.env),
                "cwd": self.cwd, "umask": self.umask}


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{what} must be a list of strings, got {type(value).__name__}")
    if any("\0" in item for item in value):
        raise ValueError(f"{what} holds a NUL character")
    return value


def parse_request(value: dict[str, object]) -> ForkRequest:
    """Validate a request frame's object into a ``ForkRequest``.

    Raises
    ------
    ValueError
        Naming the field and the rule it breaks.
    """
    kind = value.get("kind")
    if kind == "ping":
        return ForkRequest(kind="ping")
    if kind != "run":
        raise ValueError(f"kind must be 'run' or 'ping', got {kind!r}")
    if set(value) != {"kind", "argv", "env", "cwd", "umask"}:
        raise ValueError("a run request has exactly the fields kind, argv, env, cwd, umask; got "
                         f"{sorted(value)}")
    argv = _strings(value["argv"], "argv")
    if len(argv) > MAX_ARGS:
        raise ValueError(f"argv has {len(argv)} arguments; at most {MAX_ARGS}")
    env = value["env"]
    if not isinstance(env, dict):
        raise ValueError(f"env must be an object of strings, got {type(env).__name__}")
    _strings(list(env.values()), "env's values")
    if any(not key or "=" in key for key in _strings(list(env), "env's names")):
        raise ValueError("env has an empty name or a name with '='")
    cwd, umask = value["cwd"], value["umask"]
    if not isinstance(cwd, str) or not os.path.isabs(cwd) or not os.path.isdir(cwd):
        raise ValueError(f"cwd must be an existing directory's absolute path, got {cwd!r}")
    if not isinstance(umask, int) or isinstance(umask, bool) or not 0 <= umask <= 0o777:
        raise ValueError(f"umask must be an integer in 0..0o777, got {umask!r}")
    return ForkRequest(kind="run", argv=tuple(argv), env=tuple(sorted(env.items())), cwd=cwd,
                       umask=umask)


def send_stdio(sock: socket.socket, descriptors: tuple[int, int, int]) -> None:
    """Send the three descriptors (stdin, stdout, stderr) with one byte."""
    socket.send_fds(sock, [b"\0"], list(descriptors))


def receive_stdio(sock: socket.socket) -> tuple[int, int, int]:
    """Receive what ``send_stdio`` sent: three descriptors, now open in this process.

    Raises
    ------
    ProtocolError
        If the byte carried other than three descriptors (any it carried are closed).
    """
    _, descriptors, _, _ = socket.recv_fds(sock, 1, len(STDIO))
    if len(descriptors) != len(STDIO):
        for descriptor in descriptors:
            os.close(descriptor)
        raise ProtocolError(f"expected stdin, stdout and stderr ({len(STDIO)} descriptors), "
                            f"received {len(descriptors)}")
    return descriptors[0], descriptors[1], descriptors[2]


def shell_status(wait_status: int) -> int:
    """A ``waitpid`` status as a process exit code: its code, or 128 + N for signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code
