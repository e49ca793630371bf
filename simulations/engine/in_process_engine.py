"""Run a small federation in this process: no Ray, the same ServerApp, ClientApp and Messages.

``fedcare simulate`` runs federations of up to ``IN_PROCESS_MAX_HOSPITALS`` hospitals here by
default (``--engine auto``), and any size with ``--engine in-process``. The run is fedcare's
ServerApp (the real round driver) sending real Flower Messages to fedcare's ClientApp (the
real handlers, mods, ledgers and identity proofs) through
``simulations.engine.in_process_grid``: one persistent Flower Context per node, partition id
``i`` for hospital ``i``, an empty client run config and random node ids, as Flower's
simulation engine gives its nodes. Every message and every reply crosses a pickle round trip,
as it crosses into and out of a Ray actor, so the server and the hospitals share no object.

What it leaves out is Ray: its start (3-10 s), one worker process per CPU, and each worker's
imports of TensorFlow, torch and Flower (5-10 s each, in parallel on a loaded machine). The
hospitals' handlers run one after the other, each on its node's own thread; with a handler's
work in milliseconds, a round of ten hospitals is faster here than on the engine's 0.1 s tick
(``python -m benchmarks.first_result`` measures both). Each reply is waited for at most
``round-timeout`` seconds from the moment its hospital is handed the message: a slow or
hanging hospital is left out at its own deadline and never spends the others' (the grid's
module docstring). Ctrl-C still ends the run at once; the hospitals' threads are daemons.
"""

import pickle
import secrets
from enum import StrEnum
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from flwr.app import Message
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp

IN_PROCESS_MAX_HOSPITALS = 10  # auto: larger federations run on Ray's engine


class Engine(StrEnum):
    """Where ``fedcare simulate`` runs the hospitals' ClientApps."""

    AUTO = "auto"
    RAY = "ray"
    IN_PROCESS = "in-process"


def choose_engine(engine: Engine | str, hospitals: int) -> Engine:
    """The engine a run of `hospitals` uses: `engine`, or for AUTO by federation size.

    Raises
    ------
    ValueError
        If `engine` names no engine (the message lists them).
    """
    try:
        engine = Engine(engine)
    except ValueError:
        raise ValueError(f"engine must be one of {', '.join(e.value for e in Engine)}, got "
                         f"{engine!r}") from None
    if engine is not Engine.AUTO:
        return engine
    return Engine.IN_PROCESS if hospitals <= IN_PROCESS_MAX_HOSPITALS else Engine.RAY


def _node_ids(count: int) -> list[int]:
    """`count` distinct random 63-bit node ids (Flower's simulated nodes' ids are random)."""
    ids: set[int] = set()
    while len(ids) < count:
        ids.add(secrets.randbits(63) or 1)
    return list(ids)


def _copied(message: "Message") -> "Message":
    """`message` after a pickle round trip: a copy sharing no array or record with it."""
    copy: Message = pickle.loads(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    return copy


def run_in_process(server_app: "ServerApp", client_app: "ClientApp", *, hospitals: int) -> None:
    """Run `server_app` against `hospitals` nodes of `client_app`, all in this thread.

    Node ``i`` (a random id) has node config ``{"partition-id": i, "num-partitions":
    hospitals}``; the server's Context and every node's Context have an empty run config, as
    in Flower's ``run_simulation``. Returns when the ServerApp's main returns; its exceptions
    propagate.
    """
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from simulations.engine.in_process_grid import SERVER_NODE, InProcessGrid

    class CopyingGrid(InProcessGrid):
        """Deliver a copy of each message, and return a copy of each reply (as Ray pickles)."""

        def deliver(self, message: "Message", context: Context) -> "Message | None":
            reply = super().deliver(_copied(message), context)
            return None if reply is None else _copied(reply)

    run_id = secrets.randbits(63) or 1
    # A new message takes its run and source node from here (Flower 1.42).
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SERVER_NODE, 1
    nodes = {node: {"partition-id": i, "num-partitions": hospitals}
             for i, node in enumerate(_node_ids(hospitals))}
    grid = CopyingGrid(client_app, nodes, run_config={}, keep_sent=False, run_id=run_id)
    # The driver takes any grid with Flower's get_nodes / send_and_receive (server.exchange).
    try:
        server_app(cast("Grid", grid), Context(run_id=run_id, node_id=SERVER_NODE,
                                               node_config={}, state=RecordDict(),
                                               run_config={}))
    finally:
        grid.close()
