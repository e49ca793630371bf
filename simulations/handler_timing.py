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

    def mod(msg: Message, context: Context, call_next: Callable) -> Message:
        started = time.perf_counter()
        reply = call_next(msg, context)
        seconds = time.perf_counter() - started
        server_round = _round(msg)
        with open(directory / f"{os.getpid()}.txt", "a") as handle:
            handle.write(f"{server_round} {seconds:.6f}\n")
        return reply

    return mod


def _round(msg: Message) -> int:
    """The round a message belongs to: its settings', or its secure-aggregation stage's."""
    try:
        request = unpack_request(msg.content)
    except ValueError:
        return 0
    if request.settings is not None:
        return request.settings.server_round
    stage_round = (request.secagg or {}).get("secagg-round")
    return stage_round if isinstance(stage_round, int) else 0


def handler_seconds(directory: Path) -> dict[int, tuple[float, float, int]]:
    """Round -> (sum of handler seconds over hospitals and messages, largest one, messages)."""
    per_round: dict[int, list[float]] = defaultdict(list)
    for path in directory.glob("*.txt"):
        for line in path.read_text().splitlines():
            server_round, seconds = line.split()
            per_round[int(server_round)].append(float(seconds))
    return {r: (sum(v), max(v), len(v)) for r, v in sorted(per_round.items()) if r > 0}
