"""The link between a hospital's ClientApp relay and its worker: wire format, key, connection.

One request per connection, over a Unix socket with ``multiprocessing.connection``'s HMAC
challenge (a shared secret key, never sent). Frames are bytes, never pickles:

- request: the Flower ``Message`` and ``Context``, each as Flower's own protobuf
  (``flwr.common.serde``);
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
import stat
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
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


class WorkerUnavailable(RuntimeError):
    """The hospital's worker could not be reached, refused the key, or died mid-request."""


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
    message = message_from_proto(ProtoMessage.FromString(connection.recv_bytes()))
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
