"""A hospital's persistent worker: fedcare's real ClientApp, loaded once, behind a Unix socket.

In Flower 1.42 deployment every message a SuperNode receives is handled by a fresh
``flwr-clientapp`` process that imports the app; for fedcare's ClientApp (TensorFlow, Keras,
Opacus) that import costs seconds of CPU per message. The worker imports it once per hospital
and serves the messages that the light ClientApp (``client.entry``) relays to it.

It is also where the hospital's budget is enforced: the worker runs the hospital's own
installed fedcare, not the code the server ships (which only relays). With ``node_config``
(``fedcare hospital-worker --node-config FILE``, the SuperNode's own file) the worker uses the
hospital's node config and ignores the relayed one, so a relay cannot change data path, ledger
or budget; without it the relayed ``Context.node_config`` is used, as by the ClientApp.

One connection at a time (a hospital's messages are sequential); a handler error becomes the
error reply Flower itself would make. A readiness ping (``client.worker_link.wait_for_worker``)
is answered only once the socket listens and the accept loop runs. The socket and key files are
mode 0600; SIGTERM or SIGINT stops the worker and removes the socket file.
"""

import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode

from client.worker_link import (
    FAMILY,
    PING,
    PONG,
    check_socket_path,
    ensure_authkey,
    request_from_frames,
    send_reply,
)
from common.signals import raising_on_signals

logger = logging.getLogger(__name__)

Handler = Callable[[Message, Context], Message]
REQUEST_SECONDS = 60.0  # a connected relay must send its request within this


class WorkerStopped(Exception):
    """SIGTERM or SIGINT reached the worker."""


def flower_error_reply(message: Message, error: Exception) -> tuple[Message, str]:
    """The error reply Flower's ``flwr-clientapp`` makes when a ClientApp raises, and its reason.

    Same code and reason text as ``flwr/supernode/runtime/run_clientapp.py`` (Flower 1.42).
    """
    reason = str(type(error)) + ":<'" + str(error) + "'>"
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                   reply_to=message), reason


def handle(handler: Handler, message: Message, context: Context,
           node_config: Mapping[str, Any] | None = None
           ) -> tuple[Message, Context, dict[str, str] | None]:
    """Run `handler`; return (reply, context after it, error or None).

    With `node_config` the context's node config is replaced by it first (keys that differed
    are logged). A raised exception becomes Flower's error reply; the context is returned
    either way, as Flower pushes it back either way.
    """
    if node_config is not None:
        relayed = dict(context.node_config)
        differing = sorted(k for k in set(relayed) | set(node_config)
                           if relayed.get(k) != node_config.get(k))
        if differing:
            logger.warning("the relayed node config differs at %s; using this worker's own",
                           differing)
        context.node_config = dict(node_config)
    try:
        return handler(message, context), context, None
    except Exception as error:  # noqa: BLE001 - every handler error becomes an error reply
        reply, reason = flower_error_reply(message, error)
        logger.error("the ClientApp raised an exception (%s)", message.metadata.message_type,
                     exc_info=error)
        return reply, context, {"reason": reason, "traceback": traceback.format_exc()}


def serve_connection(connection: Connection, handler: Handler,
                     node_config: Mapping[str, Any] | None = None) -> None:
    """Answer the one request on `connection` (nothing if none arrives in time).

    A readiness probe (``PING``) is answered with ``PONG`` and nothing else.
    """
    if not connection.poll(REQUEST_SECONDS):
        logger.warning("a relay connected but sent nothing within %.0f s", REQUEST_SECONDS)
        return
    first = connection.recv_bytes()
    if first == PING:
        connection.send_bytes(PONG)
        return
    message, context = request_from_frames(first, connection)
    logger.info("handling %s for run %d", message.metadata.message_type, context.run_id)
    reply, context, error = handle(handler, message, context, node_config)
    send_reply(connection, reply, context, error)


def open_listener(socket_path: Path, authkey: bytes) -> Listener:
    """Listen on `socket_path` (0600); replace a stale socket file, refuse a live one.

    Raises
    ------
    ValueError
        If the path is too long, or another process already listens there.
    """
    check_socket_path(socket_path)
    if socket_path.exists():
        with socket.socket(socket.AF_UNIX) as probe:
            if probe.connect_ex(str(socket_path)) == 0:
                raise ValueError(f"another worker already listens on {socket_path}")
        socket_path.unlink()  # stale: left by a worker that was killed
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    previous = os.umask(0o177)  # the socket file is created 0600
    try:
        listener = Listener(str(socket_path), family=FAMILY, authkey=authkey)
    finally:
        os.umask(previous)
    os.chmod(socket_path, 0o600)
    return listener


def stop_on_signals() -> AbstractContextManager[None]:
    """Turn SIGTERM and SIGINT into ``WorkerStopped`` (main thread only; elsewhere a no-op)."""
    return raising_on_signals(WorkerStopped)


def serve(socket_path: Path, authkey_file: Path, handler: Handler, *,
          node_config: Mapping[str, Any] | None = None,
          stop_event: threading.Event | None = None) -> None:
    """Serve requests on `socket_path` until SIGTERM/SIGINT (or `stop_event` and one more
    connection); remove the socket file when done.

    The key comes from `authkey_file`, created (0600, random) if absent. A relay with another
    key is refused and logged; the worker goes on serving.
    """
    authkey = ensure_authkey(authkey_file)
    with stop_on_signals():
        listener = open_listener(socket_path, authkey)
        logger.info("hospital worker listening on %s (pid %d)", socket_path, os.getpid())
        try:
            while stop_event is None or not stop_event.is_set():
                try:
                    connection = listener.accept()
                except AuthenticationError as error:
                    logger.warning("refused a connection: wrong key (%s)", error)
                    continue
                except (OSError, EOFError) as error:
                    logger.warning("a connection failed during the handshake: %s", error)
                    continue
                with connection:
                    try:
                        serve_connection(connection, handler, node_config)
                    except (OSError, EOFError) as error:
                        logger.warning("lost the relay's connection: %s", error)
        except WorkerStopped as stopped:
            logger.info("hospital worker stopping (%s)", stopped)
        finally:
            listener.close()
            socket_path.unlink(missing_ok=True)
