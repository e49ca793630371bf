"""A Flower grid that delivers each message to a real ClientApp in this process, without Ray.

It drives fedcare's real driver, rounds and screening against the real ClientApp (with mods,
e.g. a misbehaving hospital) without Ray or a SuperLink: Flower's own Message objects travel,
node contexts persist across rounds (secure aggregation keeps state there), and a handler that
raises comes back as an error reply, as in Flower's engines. Tests use it, and so does
``fedcare audit``, whose several federations (the DP run, its control, shadow runs) would each
pay Ray's start-up (15-25 s here) on the simulation engine.

Deadlines: each node's handler runs on that node's own thread (its messages one after
another, in order, so its Context is never shared), and ``send_and_receive(timeout=T)`` waits
at most T seconds for each reply, from the moment that node's handler is handed the message. A
handler still running at its deadline is left out of the exchange (logged, counted in
``late``) and goes on in its thread; that node's next message waits behind it and counts
against its own deadline. So a slow or hanging hospital costs the others nothing but its own T:
every other hospital still gets its full T. The nodes are handed their messages one at a time,
in order, as before, so a run without late handlers computes exactly what it did.
"""

import itertools
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from types import SimpleNamespace
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

logger = logging.getLogger(__name__)

SERVER_NODE = 0
TaskIdentity.run_id = 1  # Flower 1.42 takes a new message's run and node ids from here
TaskIdentity.node_id = SERVER_NODE
TaskIdentity.task_id = 1


def node_context(node_config: dict[str, Any], run_config: dict[str, Any], *,
                 node_id: int = 7, run_id: int = 1) -> Context:
    """A hospital's Flower Context, kept for the whole run (as a SuperNode keeps it)."""
    return Context(run_id=run_id, node_id=node_id, node_config=node_config, state=RecordDict(),
                   run_config=run_config)


class NodeThread:
    """One node's handler thread (a daemon): the calls handed to it run one after another."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue())
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], Any]) -> "Future[Any]":
        """Queue `call`; its future holds its result (or what it raised)."""
        future: Future[Any] = Future()
        self._calls.put((call, future))
        return future

    def close(self) -> None:
        """Let the thread end once the calls queued before this have run."""
        self._calls.put(None)

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            call, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
                    future.set_exception(error)


def _close_all(threads: dict[int, NodeThread]) -> None:
    for thread in threads.values():
        thread.close()


class InProcessGrid:
    """Deliver messages to `client_app` with one persistent Context per node id.

    Every message sent is kept in ``sent`` (for tests) unless `keep_sent` is false; a reply
    that missed its deadline is counted per node id in ``late``.
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
        self.late: dict[int, int] = {}
        self._ids = itertools.count(1)
        self._threads: dict[int, NodeThread] = {}
        self._finalizer = weakref.finalize(self, _close_all, self._threads)

    def close(self) -> None:
        """End the nodes' threads (each after the calls already handed to it)."""
        self._finalizer()

    def _thread_of(self, node: int) -> NodeThread:
        if node not in self._threads:
            self._threads[node] = NodeThread(f"hospital-node-{node}")
        return self._threads[node]

    def get_node_ids(self) -> list[int]:
        """The simulated hospitals' node ids."""
        return list(self.contexts)

    def get_nodes(self) -> list[SimpleNamespace]:
        """Each node's id and hospital name, as Flower's grid lists them."""
        return [SimpleNamespace(node_id=node, name=self.names.get(node, ""))
                for node in self.contexts]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> list[Message]:
        """Deliver each message to its node's ClientApp in turn; return the replies.

        Each reply is waited for at most `timeout` seconds (None: no limit) from the moment
        its node's thread is handed the message; a later one is left out (see the module
        docstring). What a handler raises that is not an ``Exception`` (e.g. ``SystemExit``)
        is raised here.
        """
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = f"m{next(self._ids)}"
            if self.keep_sent:
                self.sent.append(message)
            node = message.metadata.dst_node_id
            context = self.contexts[node]
            future = self._thread_of(node).submit(partial(self.deliver, message, context))
            try:
                reply = future.result(timeout=timeout)
            except FutureTimeout:
                self.late[node] = self.late.get(node, 0) + 1
                logger.warning("node %d (%s) did not answer within %.1f s: left out of this "
                               "exchange", node, self.names.get(node, "hospital"), timeout)
                continue
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
