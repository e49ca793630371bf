"""Time spent inside the hospitals' handlers, so that work hiding in Flower's tick is visible.

A Flower mod (benchmarks only) times each message's handler and appends ``round seconds`` to
a file of its own process in a directory; ``handler_seconds`` sums them per round (all
hospitals' time) and takes the largest single handler, the round's critical path on a machine
with a core per hospital.
"""

import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context, Message

from common.wire.records import unpack_request


def timing_mod(directory: Path) -> Callable[[Message, Context, Callable], Message]:
    """A mod that records each handler's wall seconds under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    last_round: dict[int, int] = {}  # node -> the round its last train message named

    def mod(msg: Message, context: Context, call_next: Callable) -> Message:
        started = time.perf_counter()
        reply = call_next(msg, context)
        seconds = time.perf_counter() - started
        try:
            settings = unpack_request(msg.content).settings
        except ValueError:
            settings = None
        # Secure aggregation's later stages carry no settings: they belong to the node's round.
        server_round = (settings.server_round if settings is not None
                        else last_round.get(context.node_id, 0))
        last_round[context.node_id] = server_round
        with open(directory / f"{os.getpid()}.txt", "a") as handle:
            handle.write(f"{server_round} {seconds:.6f}\n")
        return reply

    return mod


def handler_seconds(directory: Path) -> dict[int, tuple[float, float, int]]:
    """Round -> (sum of handler seconds over hospitals and messages, largest one, messages)."""
    per_round: dict[int, list[float]] = defaultdict(list)
    for path in directory.glob("*.txt"):
        for line in path.read_text().splitlines():
            server_round, seconds = line.split()
            per_round[int(server_round)].append(float(seconds))
    return {r: (sum(v), max(v), len(v)) for r, v in sorted(per_round.items()) if r > 0}
