"""``fedcare-supernode``: Flower 1.42's SuperNode with a shorter idle poll and reply wait.

Flower 1.42's SuperNode (``flwr/supernode/start_client_internal.py``) sleeps a hard-coded 3 s
whenever its pull finds no message, and waits for the ClientApp's reply in 0.5 s steps; no flag
or variable changes either. In a deployed round the server's next message arrives about a
second after a hospital's reply, while that hospital sleeps out the rest of its 3 s: most of a
steady round is that sleep. This entry point runs Flower's own ``flower-supernode`` with the
module's ``time`` replaced by a clock whose ``sleep(3)`` lasts ``--idle-poll-seconds`` and
whose ``sleep(0.5)`` lasts ``REPLY_POLL_SECONDS``; every other call is ``time``'s own. Each idle
poll is one request to the SuperLink (TLS, signed with the node's key): a shorter poll costs
the SuperLink that many more requests per hospital per second.

It is pinned to the flwr release series it was written for (``FLWR_SERIES``) and to those
three sleeps in that module's source: on anything else it refuses to start, saying so, and
the hospital runs Flower's ``flower-supernode`` (3 s) instead. What Flower would have to
change for this entry point to go: make the two intervals settings of ``flower-supernode``.
"""

import argparse
import inspect
import re
import socket
import sys
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

FLWR_SERIES = "1.42."
IDLE_SLEEP = 3.0  # seconds: start_client_internal's sleep after a pull that found nothing
REPLY_SLEEP = 0.5  # seconds: its steps while waiting for the ClientApp's reply (and objects)
DEFAULT_IDLE_POLL_SECONDS = 0.25
REPLY_POLL_SECONDS = 0.05  # a check of the SuperNode's own in-memory state: no request
MIN_POLL_SECONDS = 0.05
EXPECTED_SLEEPS = ["time.sleep(3)", "time.sleep(0.5)", "time.sleep(0.5)"]


class PollClock:
    """``time`` with two sleeps shortened: ``sleep(IDLE_SLEEP)`` and ``sleep(REPLY_SLEEP)``."""

    def __init__(self, idle_seconds: float, reply_seconds: float) -> None:
        self.idle_seconds, self.reply_seconds = idle_seconds, reply_seconds

    def sleep(self, seconds: float) -> None:
        """Sleep `seconds`, or the shortened interval for Flower's two poll sleeps."""
        if seconds == IDLE_SLEEP:
            seconds = self.idle_seconds
        elif seconds == REPLY_SLEEP:
            seconds = self.reply_seconds
        time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        """Everything else is the ``time`` module's."""
        return getattr(time, name)


def patch_problems(version: str, source: str) -> list[str]:
    """Why the SuperNode of flwr `version` (module `source`) cannot be patched ([] if it can)."""
    if not version.startswith(FLWR_SERIES):
        return [f"fedcare-supernode is written for flwr {FLWR_SERIES}x; the installed flwr is "
                f"{version}"]
    sleeps = re.findall(r"\btime\.sleep\([^)]*\)", source)
    if sleeps != EXPECTED_SLEEPS or "import time\n" not in source:
        return [f"flwr {version}'s start_client_internal.py sleeps {sleeps}, not "
                f"{EXPECTED_SLEEPS}: not the SuperNode this entry point was written for"]
    return []


def supernode_module() -> ModuleType:
    """Flower's ``flwr.supernode.start_client_internal`` (the SuperNode's main loop)."""
    from flwr.supernode import start_client_internal

    return start_client_internal


def patch_supernode(module: ModuleType, idle_seconds: float,
                    reply_seconds: float = REPLY_POLL_SECONDS) -> None:
    """Give `module` (``start_client_internal``) a ``PollClock`` in place of ``time``."""
    module.__dict__["time"] = PollClock(idle_seconds, reply_seconds)


def check_poll_seconds(value: str) -> float:
    """Parse ``--idle-poll-seconds``: a number in [``MIN_POLL_SECONDS``, ``IDLE_SLEEP``]."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not MIN_POLL_SECONDS <= seconds <= IDLE_SLEEP:
        raise argparse.ArgumentTypeError(f"must be between {MIN_POLL_SECONDS} and {IDLE_SLEEP} "
                                         f"seconds, got {value}")
    return seconds


def split_arguments(argv: Sequence[str]) -> tuple[float, list[str]]:
    """(idle poll seconds, the arguments left for ``flower-supernode``)."""
    parser = argparse.ArgumentParser(
        prog="fedcare-supernode", add_help=False,
        description="Flower's flower-supernode with a shorter idle poll (flwr 1.42 only); "
                    "every other argument is flower-supernode's.")
    parser.add_argument("--idle-poll-seconds", type=check_poll_seconds,
                        default=DEFAULT_IDLE_POLL_SECONDS,
                        help="seconds between pulls that find no message (Flower: 3)")
    known, rest = parser.parse_known_args(list(argv))
    return known.idle_poll_seconds, rest


RUNTIME_API_DEFAULT = ("127.0.0.1", 9094)  # flower-supernode's --host, --port defaults


def runtime_api_address(rest: Sequence[str]) -> tuple[str, int | None]:
    """The (host, port) flower-supernode's Runtime API will listen on, from its arguments.

    The port is None when ``--port`` is not an integer (flower-supernode then says why).
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--host", default=RUNTIME_API_DEFAULT[0])
    parser.add_argument("--port", default=str(RUNTIME_API_DEFAULT[1]))
    known, _ = parser.parse_known_args(list(rest))
    try:
        return known.host, int(known.port)
    except ValueError:
        return known.host, None


def port_problem(host: str, port: int | None) -> str | None:
    """Why this SuperNode's Runtime API cannot listen on `host`:`port` (None if it can).

    The check binds and releases the port, before Flower would fail on it with a traceback;
    a port taken between the two still fails in Flower.
    """
    if port is None:
        return None
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            return (f"fedcare-supernode: port {port} on {host}, where this SuperNode's Runtime "
                    f"API listens for its ClientApp processes (--port, default "
                    f"{RUNTIME_API_DEFAULT[1]}), is not free ({error.strerror}); another "
                    f"SuperNode on this machine may hold it: give each SuperNode its own --port "
                    f"(e.g. {port + 1})")
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``fedcare-supernode [--idle-poll-seconds S] FLOWER-SUPERNODE-ARGS``."""
    idle_seconds, rest = split_arguments(sys.argv[1:] if argv is None else argv)
    if "-h" not in rest and "--help" not in rest and (
            problem := port_problem(*runtime_api_address(rest))):
        sys.exit(problem)
    import flwr

    module = supernode_module()
    problems = patch_problems(str(flwr.__version__), inspect.getsource(module))
    if problems:
        sys.exit("fedcare-supernode: " + "; ".join(problems) + ". Start Flower's own "
                 "flower-supernode instead (same arguments, 3 s idle poll), or a fedcare "
                 "release made for this flwr.")
    patch_supernode(module, idle_seconds)
    from flwr.supernode.cli import flower_supernode

    sys.stderr.write(f"fedcare-supernode: flower-supernode with a {idle_seconds:g} s idle poll "
                     f"and {REPLY_POLL_SECONDS:g} s reply wait\n")
    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


if __name__ == "__main__":
    main()
