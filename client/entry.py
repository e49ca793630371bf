"""The ClientApp Flower loads (pyproject's clientapp component): light, it relays or delegates.

Flower 1.42 starts a fresh ``flwr-clientapp`` process for every message and imports this
module there, so it imports no TensorFlow, Keras, torch or Opacus. For each message, after the
hospital's app pin (``client.app_pinning.verify_app_mod``, checked here on the shipped code):

- node config ``worker-socket`` set: the message and its Context go to the hospital's worker
  (``fedcare hospital-worker``), which runs fedcare's ClientApp loaded once, from the
  hospital's own install; the reply comes back and the Context's ``state`` is taken over from
  the worker (secure-aggregation state between stages);
- otherwise: ``client.app`` is imported here and handles the message (simulation and simple
  deployments, as before).

Every message type fedcare uses is registered: ``train``, ``evaluate`` and the secure-
aggregation actions ``train.secagg_advertise|share|mask|unmask``.
"""

import logging
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.app_pinning import verify_app_mod
from client.worker_link import (
    WORKER_AUTHKEY_FILE,
    WORKER_SOCKET,
    call_worker,
    default_authkey_file,
    read_authkey,
)
from common.wire.actions import SECAGG_ACTIONS

logger = logging.getLogger(__name__)

TRAIN_ACTIONS = SECAGG_ACTIONS


def worker_files(node_config: dict[str, object]) -> tuple[Path, Path] | None:
    """(socket, key file) of the hospital's worker, or None if the node config names none.

    Raises
    ------
    ValueError
        If ``worker-socket`` or ``worker-authkey-file`` is not a non-empty string.
    """
    socket_value = node_config.get(WORKER_SOCKET)
    if socket_value is None:
        return None
    key_value = node_config.get(WORKER_AUTHKEY_FILE)
    for key, value in ((WORKER_SOCKET, socket_value), (WORKER_AUTHKEY_FILE, key_value)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"node config {key} must be a file path (a quoted TOML string), "
                             f"got {value!r}")
    socket_path = Path(str(socket_value)).expanduser()
    key_file = (Path(str(key_value)).expanduser() if key_value is not None
                else default_authkey_file(socket_path))
    return socket_path, key_file


def relay(message: Message, context: Context, socket_path: Path, key_file: Path) -> Message:
    """Have the worker handle `message`; take over the Context state it returns.

    An error in the worker's ClientApp comes back as the error reply Flower would have made
    (logged here with the worker's traceback); an unreachable worker raises
    ``WorkerUnavailable``, which Flower turns into an error reply.
    """
    reply, returned, error = call_worker(socket_path, read_authkey(key_file), message, context)
    context.state = returned.state
    if error is not None:
        logger.error("the hospital worker's ClientApp raised: %s\n%s", error.get("reason"),
                     error.get("traceback", ""))
    return reply


def handle(message: Message, context: Context) -> Message:
    """Relay `message` to the hospital's worker, or handle it with ``client.app`` here."""
    files = worker_files(dict(context.node_config))
    if files is not None:
        return relay(message, context, *files)
    from client.app import app as fedcare_app  # TensorFlow etc.: only on this path

    return fedcare_app(message, context)


app = ClientApp(mods=[verify_app_mod])
app.train()(handle)
app.evaluate()(handle)
for _action in TRAIN_ACTIONS:
    app.train(_action)(handle)
