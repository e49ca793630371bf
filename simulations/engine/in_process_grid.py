"""A Flower grid that delivers each message to a real ClientApp in this process, without Ray.

It drives fedcare's real driver, rounds and screening against the real ClientApp (with mods,
e.g. a misbehaving hospital) without Ray or a SuperLink: Flower's own Message objects travel,
node contexts persist across rounds (secure aggregation keeps state there), and a handler that
raises comes back as an error reply, as in Flower's engines. Tests use it, and so does
``fedcare audit``, whose several federations (the DP run, its control, shadow runs) would each
pay Ray's start-up (15-25 s here) on the simulation engine.
"""

import itertools
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

SERVER_NODE = 0
TaskIdentity.run_id = 1  # Flower 1.42 takes a new message's run and node ids from here
TaskIdentity.node_id = SERVER_NODE
TaskIdentity.task_id = 1


def node_context(node_config: dict[str, Any], run_config: dict[str, Any], *,
                 node_id: int = 7, run_id: int = 1) -> Context:
    """A hospital's Flower Context, kept for the whole run (as a SuperNode keeps it)."""
    return Context(run_id=run_id, node_id=node_id, node_config=node_config, state=RecordDict(),
                   run_config=run_config)


class InProcessGrid:
    """Deliver messages to `client_app` with one persistent Context per node id.

    Every message sent is kept in ``sent`` (for tests) unless `keep_sent` is false.
    """

    def __init__(self, client_app: Any, node_configs: dict[int, dict[str, Any]],
                 run_config: dict[str, Any], names: dict[int, str] | None = None, *,
                 keep_sent: bool = True, run_id: int = 1) -> None:
        self.client_app = client_app
        self.contexts = {node: node_context(config, run_config, node_id=node, run_id=run_id)
                         for node, config in node_configs.items()}
        self.names = names or {}
        self.sent: list[Message] = []
        self.keep_sent = keep_sent
        self._ids = itertools.count(1)

    def get_node_ids(self) -> list[int]:
        """The simulated hospitals' node ids."""
        return list(self.contexts)

    def get_nodes(self) -> list[SimpleNamespace]:
        """Each node's id and hospital name, as Flower's grid lists them."""
        return [SimpleNamespace(node_id=node, name=self.names.get(node, ""))
                for node in self.contexts]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> list[Message]:
        """Deliver each message to its node's ClientApp in turn; return the replies."""
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = f"m{next(self._ids)}"
            if self.keep_sent:
                self.sent.append(message)
            reply = self.deliver(message, self.contexts[message.metadata.dst_node_id])
            if reply is not None:
                replies.append(reply)
        return replies

    def deliver(self, message: Message, context: Context) -> Message | None:
        """`message`'s reply from the node's ClientApp (an error reply if a handler raises)."""
        try:
            reply: Message | None = self.client_app(message=message, context=context)
        except Exception as error:  # as Flower's engines: an error reply, the round goes on
            reply = Message(Error(code=1, reason=f"{type(error).__name__}: {error}"),
                            reply_to=message)
        return reply
