"""Where a deployed round's seconds go, read from Flower's own logs (flwr 1.42, DEBUG level).

With ``FLWR_LOG_LEVEL=DEBUG`` every Flower process stamps its log lines with wall-clock time
(``DEBUG 2026-12-01 11:32:04,733: ...``, local time, millisecond resolution). One exchange
leaves these events, in order:

- SuperLink log: ``Runtime.PushMessages`` (the ServerApp pushes the exchange's messages);
- each hospital's SuperNode log: ``Receiving: <type> message`` (its pull found the message),
  ``Runtime.PullTaskInput`` (the fresh per-message ``flwr-clientapp`` process has started,
  imported Flower and asks for its input), ``Runtime.PushMessages`` (that process pushes the
  reply), ``Sending: <type> message`` (the SuperNode pushes it to the SuperLink);
- SuperLink log: the ServerApp's next ``Runtime.PullMessages`` after the last reply arrived.

The parts of an exchange, on its critical path (the hospital whose reply was sent last):
``node poll`` (push -> receiving: the SuperNode's 3 s pull sleep), ``process start``
(receiving -> pull-task-input: the SuperExec's poll, Python start, Flower's imports),
``hospital work`` (pull-task-input -> push: the FAB unpacked, the app loaded, the message
handled, in fedcare by the hospital's worker), ``reply hand-off`` (push -> sending: the
SuperNode's 0.5 s wait for the reply), ``server poll`` (sending -> the ServerApp's next pull:
its 3 s sleep) and ``server work`` (that pull -> the next exchange's push: screening,
aggregation, evaluation, checkpoint). Pure parsing; no Flower import.
"""

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

PARTS = ("node poll", "process start", "hospital work", "reply hand-off", "server poll",
         "server work")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STAMP = re.compile(r"^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+"
                    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\s*:\s*(.*)$")
_RECEIVING = re.compile(r"^Receiving: (\w+) message")
_SENDING = re.compile(r"^Sending: (\w+) message")


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One timestamped Flower log line: `time` in seconds since the epoch, `text` its message."""

    time: float
    text: str


def read_events(lines: Iterable[str]) -> list[LogEvent]:
    """The timestamped Flower lines of a log (colour codes removed; other lines skipped)."""
    events = []
    for line in lines:
        match = _STAMP.match(_ANSI.sub("", line).strip())
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            events.append(LogEvent(stamp.timestamp(), match.group(2).strip()))
    return events


@dataclass(frozen=True, slots=True)
class NodeTask:
    """One message as a hospital's SuperNode handled it (times in seconds since the epoch)."""

    kind: str  # "train" or "evaluate"
    received: float
    started: float  # the per-message process asked for its input
    replied: float  # the per-message process pushed its reply
    sent: float  # the SuperNode pushed the reply to the SuperLink


def node_tasks(events: Sequence[LogEvent]) -> list[NodeTask]:
    """Each complete message handling in a SuperNode's log, in order."""
    tasks, current = [], {}
    for event in events:
        if match := _RECEIVING.match(event.text):
            current = {"kind": match.group(1), "received": event.time}
        elif event.text == "Runtime.PullTaskInput" and "received" in current:
            current.setdefault("started", event.time)
        elif event.text == "Runtime.PushMessages" and "started" in current:
            current["replied"] = event.time
        elif (match := _SENDING.match(event.text)) and "replied" in current:
            tasks.append(NodeTask(kind=current["kind"], received=current["received"],
                                  started=current["started"], replied=current["replied"],
                                  sent=event.time))
            current = {}
    return tasks


@dataclass(frozen=True, slots=True)
class Exchange:
    """One push of messages by the ServerApp and the replies it waited for."""

    kind: str
    parts: dict[str, float]  # PARTS -> seconds (server work is absent for the last exchange)

    @property
    def seconds(self) -> float:
        """The exchange's duration, push to next push (or to its last pull)."""
        return sum(self.parts.values())


def exchanges(superlink: Sequence[LogEvent], nodes: Sequence[Sequence[NodeTask]]
              ) -> list[Exchange]:
    """The run's exchanges: each ServerApp push, matched with every node's task after it.

    Raises
    ------
    ValueError
        If the logs do not hold the same number of pushes and tasks per node (a log cut short,
        or not written at DEBUG level).
    """
    pushes = [e.time for e in superlink if e.text == "Runtime.PushMessages"]
    pulls = [e.time for e in superlink if e.text == "Runtime.PullMessages"]
    if not pushes:
        raise ValueError("the SuperLink log has no timestamped Runtime.PushMessages: was it "
                         "written with FLWR_LOG_LEVEL=DEBUG?")
    for index, tasks in enumerate(nodes):
        if len(tasks) != len(pushes):
            raise ValueError(f"node log {index} holds {len(tasks)} handled messages for "
                             f"{len(pushes)} ServerApp pushes")
    result = []
    for k, push in enumerate(pushes):
        tasks = [node[k] for node in nodes]
        last = max(tasks, key=lambda task: task.sent)
        noticed = next((t for t in pulls if t >= last.sent), last.sent)
        parts = {"node poll": last.received - push, "process start": last.started - last.received,
                 "hospital work": last.replied - last.started,
                 "reply hand-off": last.sent - last.replied, "server poll": noticed - last.sent}
        if k + 1 < len(pushes):
            parts["server work"] = pushes[k + 1] - noticed
        result.append(Exchange(kind=last.kind, parts=parts))
    return result


def exchanges_per_round(run: Sequence[Exchange]) -> list[int]:
    """Exchanges from each train exchange to the next: 1 folded, 2 with a separate evaluate."""
    starts = [k for k, exchange in enumerate(run) if exchange.kind == "train"]
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


def steady_parts(run: Sequence[Exchange], skip_first: int = 1) -> dict[str, float]:
    """Median seconds of each part over the exchanges after the first `skip_first` rounds'
    and before the last (an extra evaluate exchange, or the last round's), summed per round.
    """
    per_round = max(1, round(statistics.median(exchanges_per_round(run) or [1])))
    steady = run[skip_first * per_round:len(run) - 1]
    if not steady:
        raise ValueError(f"{len(run)} exchanges: too few rounds for a steady round")
    return {part: per_round * statistics.median(e.parts.get(part, 0.0) for e in steady)
            for part in PARTS}


def deployment_exchanges(logs: Path, hospitals: Sequence[str]) -> list[Exchange]:
    """Read ``superlink.log`` and ``<hospital>.log`` under `logs` (deploy-local's layout)."""
    superlink = read_events((logs / "superlink.log").read_text(errors="replace").splitlines())
    nodes = [node_tasks(read_events((logs / f"{name}.log").read_text(errors="replace")
                                    .splitlines())) for name in hospitals]
    return exchanges(superlink, nodes)
