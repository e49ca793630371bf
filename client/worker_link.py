"""The link between a hospital's ClientApp relay and its worker: wire format, key, connection.

One request per connection, over a Unix socket with ``multiprocessing.connection``'s HMAC
challenge (a shared secret key, never sent). Frames are bytes, never pickles:

- request: the Flower ``Message`` and ``Context``, each as Flower's own protobuf
  (``flwr.common.serde``);
- readiness probe: the single frame ``PING``, answered by ``PONG`` (a serialized ``Message``
  never starts with these bytes: 0x66 is no valid protobuf tag), so a caller knows the worker
  listens, accepts, knows the key and serves, not only that its socket file exists;
- reply: a JSON header (``{"error": null}``, or the handler's error as ``{"reason", "traceback"}``),
  the reply ``Message`` and the ``Context`` after the handler (its ``state`` carries
  secure-aggregation state between messages).

The key file holds 32 random bytes in hex (``secrets.token_bytes``), mode 0600. Light imports
only (Flower's serde, no TensorFlow): the relay side runs in Flower's per-message process.
"""

import contextlib
import json
import os
import secrets
import socket
import stat
import struct
import time
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, answer_challenge, deliver_challenge
from pathlib import Path

from flwr.app import Context, Message
from flwr.common.serde import (
    context_from_proto,
    context_to_proto,
    message_from_proto,
    message_to_proto,
)
from flwr.proto.message_pb2 import Context as ProtoContext  # pylint: disable=E0611
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=E0611

from common.key_files import PRIVATE_MODE, PendingFile, write_file

WORKER_SOCKET = "worker-socket"            # node config key: the worker's Unix socket
WORKER_AUTHKEY_FILE = "worker-authkey-file"  # node config key: its key file
AUTHKEY_SUFFIX = ".authkey"  # default key file: the socket's path plus this suffix
AUTHKEY_BYTES = 32
FAMILY = "AF_UNIX"
MAX_SOCKET_PATH = 107  # bytes in sockaddr_un.sun_path on Linux, less the final NUL
PING = b"fedcare-worker-ping"  # the readiness probe's request frame
PONG = b"fedcare-worker-pong"  # and the worker's answer
PING_SECONDS = 5.0  # one probe (connect, key handshake, ping, answer) must finish within this
RETRY_SECONDS = 0.05  # pause between probes while waiting for a worker


class WorkerUnavailable(RuntimeError):
    """The hospital's worker could not be reached, refused the key, or died mid-request."""


class WorkerKeyRefused(WorkerUnavailable):
    """The worker refused the key (or the caller refused the worker's): waiting will not help."""


def default_authkey_file(socket_path: Path) -> Path:
    """The key file used when none is named: ``<socket>.authkey`` next to the socket."""
    return socket_path.with_name(socket_path.name + AUTHKEY_SUFFIX)


def check_socket_path(socket_path: Path) -> None:
    """Raise ``ValueError`` if `socket_path` is too long for a Unix socket (naming it)."""
    if len(os.fsencode(str(socket_path))) > MAX_SOCKET_PATH:
        raise ValueError(f"worker socket path {socket_path} is longer than {MAX_SOCKET_PATH} "
                         "bytes, the limit of a Unix socket address; choose a shorter path")


def read_authkey(path: Path) -> bytes:
    """Return the key in `path` (hex text).

    Raises
    ------
    ValueError
        If the file is missing, readable by group or others, or not hex of at least 16 bytes.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"worker key file {path}: cannot read it ({error})") from None
    if stat.S_IMODE(mode) & 0o077:
        raise ValueError(f"worker key file {path} is readable by group or others (mode "
                         f"{stat.S_IMODE(mode):o}); run `chmod 600 {path}`")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"worker key file {path} is not hex text") from None
    if len(key) < 16:
        raise ValueError(f"worker key file {path} holds {len(key)} bytes; at least 16 needed")
    return key


def ensure_authkey(path: Path) -> bytes:
    """Return the key in `path`, first writing a fresh one (0600, atomically) if it is absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = (secrets.token_bytes(AUTHKEY_BYTES).hex() + "\n").encode("ascii")
    with contextlib.suppress(FileExistsError):  # another worker start made it first: use it
        write_file(PendingFile(path, fresh, PRIVATE_MODE), force=False)
    return read_authkey(path)


def send_request(connection: Connection, message: Message, context: Context) -> None:
    """Send a message and its context."""
    connection.send_bytes(message_to_proto(message).SerializeToString())
    connection.send_bytes(context_to_proto(context).SerializeToString())


def receive_request(connection: Connection) -> tuple[Message, Context]:
    """Receive what ``send_request`` sent."""
    return request_from_frames(connection.recv_bytes(), connection)


def request_from_frames(first: bytes, connection: Connection) -> tuple[Message, Context]:
    """The request whose first frame (the message) is `first`; its context is read next."""
    message = message_from_proto(ProtoMessage.FromString(first))
    context = context_from_proto(ProtoContext.FromString(connection.recv_bytes()))
    return message, context


def send_reply(connection: Connection, reply: Message, context: Context,
               error: dict[str, str] | None = None) -> None:
    """Send the handler's reply, its context and (if it raised) the error's reason/traceback."""
    connection.send_bytes(json.dumps({"error": error}).encode("utf-8"))
    connection.send_bytes(message_to_proto(reply).SerializeToString())
    connection.send_bytes(context_to_proto(context).SerializeToString())


def receive_reply(connection: Connection) -> tuple[Message, Context, dict[str, str] | None]:
    """Receive what ``send_reply`` sent: (reply, context, error or None)."""
    header = json.loads(connection.recv_bytes().decode("utf-8"))
    reply = message_from_proto(ProtoMessage.FromString(connection.recv_bytes()))
    context = context_from_proto(ProtoContext.FromString(connection.recv_bytes()))
    return reply, context, header.get("error")


def call_worker(socket_path: Path, authkey: bytes, message: Message, context: Context
                ) -> tuple[Message, Context, dict[str, str] | None]:
    """Have the worker at `socket_path` handle `message`; return (reply, context, error).

    Raises
    ------
    WorkerUnavailable
        If nothing listens there, the worker refuses the key, or it closes without a reply.
    """
    try:
        connection = Client(str(socket_path), family=FAMILY, authkey=authkey)
    except FileNotFoundError:
        raise WorkerUnavailable(
            f"no hospital worker at {socket_path}: start it with `fedcare hospital-worker "
            f"--socket {socket_path}` before the SuperNode") from None
    except (OSError, EOFError) as error:
        raise WorkerUnavailable(f"cannot reach the hospital worker at {socket_path}: "
                                f"{error}") from None
    except AuthenticationError as error:
        raise WorkerUnavailable(f"the hospital worker at {socket_path} refused this key "
                                f"({error}): node config {WORKER_AUTHKEY_FILE} must name the "
                                "worker's key file") from None
    with connection:
        try:
            send_request(connection, message, context)
            return receive_reply(connection)
        except (OSError, EOFError) as error:
            raise WorkerUnavailable(f"the hospital worker at {socket_path} closed the "
                                    f"connection without a reply ({error or 'EOF'}); see "
                                    "its log") from None


def _bounded_connection(socket_path: Path, seconds: float) -> Connection:
    """A connection to `socket_path` whose connect, reads and writes each give up after
    `seconds` (``multiprocessing.connection.Client`` would block without limit).
    """
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(seconds)
        sock.connect(str(socket_path))
        sock.setblocking(True)  # Connection reads the raw descriptor: keep it blocking ...
        limit = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)  # ... but bounded
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
        return Connection(sock.detach())


def ping_worker(socket_path: Path, authkey: bytes, seconds: float = PING_SECONDS) -> None:
    """Probe the worker at `socket_path` once: connect, the key handshake, a ping answered.

    Raises
    ------
    WorkerKeyRefused
        If the key handshake fails (a wrong key).
    WorkerUnavailable
        If nothing listens there yet, or the worker does not answer within `seconds`.
    """
    try:
        connection = _bounded_connection(socket_path, seconds)
    except FileNotFoundError:
        raise WorkerUnavailable(f"no socket file at {socket_path} yet") from None
    except OSError as error:  # ConnectionRefusedError: the file exists before listen()
        raise WorkerUnavailable(f"{socket_path} does not accept connections yet "
                                f"({error})") from None
    with connection:
        try:
            answer_challenge(connection, authkey)
            deliver_challenge(connection, authkey)
            connection.send_bytes(PING)
            answer = connection.recv_bytes()
        except AuthenticationError as error:
            raise WorkerKeyRefused(f"the hospital worker at {socket_path} refused the key "
                                   f"({error})") from None
        except (OSError, EOFError) as error:  # BlockingIOError: SO_RCVTIMEO ran out
            raise WorkerUnavailable(f"the hospital worker at {socket_path} did not answer a "
                                    f"ping within {seconds:g} s ({error or 'EOF'})") from None
    if answer != PONG:
        raise WorkerUnavailable(f"{socket_path} answered the ping with {answer[:40]!r}: not a "
                                "fedcare hospital worker of this version")


def wait_for_worker(socket_path: Path, key_file: Path, *, timeout: float,
                    check: Callable[[], None] | None = None) -> float:
    """Wait until the worker at `socket_path` answers a ping; return the seconds waited.

    Readiness is a real handshake (``ping_worker``), not the socket file's existence: the
    file appears at ``bind()``, before ``listen()``, and a connection then is refused. The
    key is read from `key_file` once it exists (the worker writes it at start-up).

    Parameters
    ----------
    socket_path, key_file : Path
        The worker's socket and key file.
    timeout : float
        Seconds to wait in all.
    check : callable, optional
        Called before every probe; may raise to stop waiting (e.g. the worker process died).

    Raises
    ------
    WorkerKeyRefused
        At once if the worker refuses the key.
    WorkerUnavailable
        If the worker has not answered within `timeout` (naming the socket and the last reason).
    ValueError
        If the key file is unreadable or not private (from ``read_authkey``).
    """
    started = time.monotonic()
    deadline = started + timeout
    reason = f"no key file at {key_file} yet"
    while True:
        if check is not None:
            check()
        remaining = deadline - time.monotonic()
        if key_file.exists():
            try:
                ping_worker(socket_path, read_authkey(key_file),
                            max(0.1, min(PING_SECONDS, remaining)))
                return time.monotonic() - started
            except WorkerKeyRefused:
                raise
            except WorkerUnavailable as error:
                reason = str(error)
        if time.monotonic() >= deadline:
            raise WorkerUnavailable(f"the hospital worker at {socket_path} was not ready within "
                                    f"{timeout:g} s: {reason}")
        time.sleep(min(RETRY_SECONDS, max(0.0, deadline - time.monotonic())))
