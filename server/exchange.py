"""One exchange with the hospitals: push the messages, poll for the replies, until a deadline.

Flower 1.42's ``Grid.send_and_receive`` sleeps between pulls for replies: 0.1 s in the
simulation (``InMemoryGrid.pull_interval``) and a hard-coded 3 s in deployment
(``HttpGrid``), so a reply that arrives just after a pull waits up to that long. This does
the same push and pulls (the grid's own public ``push_messages`` / ``pull_messages``) with
shorter sleeps: ``IN_MEMORY_POLL_SECONDS`` in the simulation, where a pull reads this
process's memory, and ``SUPERLINK_POLL_SECONDS`` against a SuperLink, where each pull is one
HTTP request (the SuperNodes' SuperExecs poll as often). Grids that are not Flower's (the
in-process grids of tests and ``fedcare audit``) deliver every reply in their own call.
"""

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

IN_MEMORY_POLL_SECONDS = 0.002  # a pull here costs about 0.05 ms of this process
SUPERLINK_POLL_SECONDS = 0.25


def poll_seconds(grid: Grid) -> float:
    """How long to sleep between pulls on `grid`."""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    return IN_MEMORY_POLL_SECONDS if isinstance(grid, InMemoryGrid) else SUPERLINK_POLL_SECONDS


def send_and_receive(grid: Grid, messages: Iterable[Message], *, timeout: float
                     ) -> list[Message]:
    """Push `messages` and return the replies that arrive within `timeout` seconds.

    The same contract as ``Grid.send_and_receive`` (replies in arrival order; a hospital that
    does not answer in time is simply absent), with fedcare's poll interval.
    """
    if not isinstance(grid, Grid):  # fedcare's in-process grids: no polling to shorten
        return list(grid.send_and_receive(messages, timeout=timeout))
    waiting = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    pause = poll_seconds(grid)
    replies: list[Message] = []
    while waiting:
        arrived = list(grid.pull_messages(waiting))
        replies.extend(arrived)
        waiting.difference_update(reply.metadata.reply_to_message_id for reply in arrived)
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
    return replies
