"""Time spent inside the hospitals' handlers, so that work hiding in Flower's tick is visible.

A Flower mod (benchmarks only) times each message's handler and appends ``round seconds
started created`` to a file of its own process in a directory (`started`: the handler's start,
`created`: the process's creation, both in seconds since the epoch); ``handler_seconds`` sums
them per round (all hospitals' time) and takes the largest single handler, the round's critical
path on a machine with a core per hospital; ``start_up`` splits the first round's wait.
"""

import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from common.wire.records import unpack_request


def timing_mod(directory: Path) -> Callable[[Message, Context, Callable], Message]:
    """A mod that records each handler's wall seconds under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)

    def mod(msg: Message, context: Context, call_next: Callable) -> Message:
        wall, started = time.time(), time.perf_counter()
        reply = call_next(msg, context)
        seconds = time.perf_counter() - started
        server_round = _round(msg)
        created = psutil.Process(os.getpid()).create_time()
        with open(directory / f"{os.getpid()}.txt", "a") as handle:
            handle.write(f"{server_round} {seconds:.6f} {wall:.6f} {created:.6f}\n")
        return reply

    return mod


def timed_client_app(timing_dir: Path, privacy_for: Callable) -> ClientApp:
    """Fedcare's ClientApp with `privacy_for`, its handlers timed under `timing_dir` (a
    ``RecipeClientApp`` recipe).
    """
    from client.app import build_client_app

    return build_client_app(privacy_for, mods=[timing_mod(timing_dir)])


def timed_null_app(timing_dir: Path, key_dir: Path | None = None) -> ClientApp:
    """The null ClientApp, its handlers timed under `timing_dir` (a recipe)."""
    from benchmarks.null_client import build_null_app

    return build_null_app([timing_mod(timing_dir)], key_dir)


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
            server_round, seconds, *_ = line.split()
            per_round[int(server_round)].append(float(seconds))
    return {r: (sum(v), max(v), len(v)) for r, v in sorted(per_round.items()) if r > 0}


@dataclass(frozen=True, slots=True)
class StartUp:
    """Where the first round's wait went (seconds), from the run's start at `began`.

    ``server_ready``: the run's start to the ServerApp's first round (this process: Flower's
    simulation set-up, the task's data, the model built); ``to_workers``: the run's start to
    the first hospital process's creation (Ray started, its actors spawned); ``worker_imports``:
    a hospital process's creation to its first handler (importing the app: TensorFlow, Keras,
    fedcare; Flower's actor set-up; waiting for the first message; median over processes);
    ``first_handler``: the first message's handler (building and tracing the model; median).
    """

    server_ready: float
    to_workers: float
    worker_imports: float
    first_handler: float


def start_up(directory: Path, began: float, round_one: float) -> StartUp:
    """Split the first round's wait, from the handler records under `directory` and the
    ServerApp's first round's start `round_one` (seconds since the epoch).
    """
    firsts = []
    for path in directory.glob("*.txt"):
        records = [line.split() for line in path.read_text().splitlines()]
        if records and len(records[0]) == 4:
            first = min(records, key=lambda record: float(record[2]))
            firsts.append((float(first[3]), float(first[2]), float(first[1])))
    if not firsts:
        raise ValueError(f"{directory}: no handler records with start times")
    return StartUp(
        server_ready=round_one - began,
        to_workers=min(created for created, _, _ in firsts) - began,
        worker_imports=statistics.median(start - created for created, start, _ in firsts),
        first_handler=statistics.median(seconds for _, _, seconds in firsts))
