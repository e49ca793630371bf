"""The per-message ``flwr-clientapp`` as a launcher: the hospital's fork server runs the ClientApp.

Flower's SuperExec starts ``flwr-clientapp`` (the first on ``PATH``) for every message. With
``FEDCARE_CLIENTAPP_SERVER`` naming a fork server's socket in the SuperNode's environment,
that process only imports the standard library: it proves the key (``client.fork_protocol``),
hands over its arguments, environment, working directory, umask and its stdin, stdout and
stderr, and waits. The server forks a child that runs Flower's ``run_clientapp`` with those
arguments, writing to this process's output; this process forwards SIGTERM, SIGINT and SIGHUP
to the child and exits with the child's status.

``ForkServerUnavailable`` means nothing ran (no server, a wrong key, a refused request): the
caller then runs the ClientApp itself, as without a fork server. Once the server has accepted
the request nothing is retried: the child may already have taken the message.
"""

import contextlib
import os
import signal
import socket
import sys
from types import FrameType

from client.fork_protocol import (
    HANDSHAKE_SECONDS,
    STDIO,
    ForkRequest,
    ProtocolError,
    StrPath,
    default_key_file,
    launcher_handshake,
    read_key,
    receive_json,
    send_json,
    send_stdio,
)

ACCEPT_SECONDS = 30.0  # the server must answer a sent request (fork, or refuse) within this
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class ForkServerUnavailable(RuntimeError):
    """The fork server could not run this message (the message says why); nothing ran."""


def say(text: str) -> None:
    """One line on stderr (the SuperNode's log), prefixed with this program's name."""
    sys.stderr.write(f"fedcare-clientapp: {text}\n")
    sys.stderr.flush()


def stdio_descriptors() -> tuple[int, int, int]:
    """Return stdin, stdout and stderr's descriptors; ``/dev/null`` in place of a closed one."""
    found = []
    for descriptor in STDIO:
        try:
            os.fstat(descriptor)
            found.append(descriptor)
        except OSError:
            found.append(os.open(os.devnull, os.O_RDWR))
    return found[0], found[1], found[2]


def current_umask() -> int:
    """Return the umask (read by setting and restoring it)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def connect(socket_path: StrPath, key_file: StrPath) -> socket.socket:
    """A connection to the fork server at `socket_path`, both sides having proved the key.

    Raises
    ------
    ForkServerUnavailable
        If the key file is unusable, nothing listens there, or the handshake fails.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(HANDSHAKE_SECONDS)
    key = bytearray()
    try:
        sock.connect(os.fspath(socket_path))
        key = read_key(key_file)
        launcher_handshake(sock, key)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise ForkServerUnavailable(f"no ClientApp fork server listens at {socket_path}") from None
    except (OSError, ValueError, ProtocolError) as error:
        sock.close()
        raise ForkServerUnavailable(f"the ClientApp fork server at {socket_path}: "
                                    f"{error}") from None
    finally:
        key[:] = bytes(len(key))
    return sock


def request_fork(sock: socket.socket, argv: list[str]) -> int:
    """Send the run request and this process's stdio; return the child's pid.

    Raises
    ------
    ForkServerUnavailable
        If the server refused the request (nothing ran).
    ProtocolError, OSError
        If the server did not answer (it may have forked: do not run the message again).
    """
    request = ForkRequest(kind="run", argv=tuple(argv), env=tuple(os.environ.items()),
                          cwd=os.getcwd(), umask=current_umask())
    send_json(sock, request.to_json())
    send_stdio(sock, stdio_descriptors())
    sock.settimeout(ACCEPT_SECONDS)
    answer = receive_json(sock)
    if "refused" in answer:
        raise ForkServerUnavailable(f"the ClientApp fork server refused the request: "
                                    f"{answer['refused']}")
    pid = answer.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ProtocolError(f"the fork server answered {answer!r}, not a child's pid")
    return pid


class SignalRelay:
    """Forward SIGTERM, SIGINT and SIGHUP to the child once its pid is known; until then keep
    them (a signal before the fork request is answered reaches the child as soon as it exists).
    """

    def __init__(self) -> None:
        self.child = 0
        self.pending: list[int] = []
        self.previous = {signum: signal.signal(signum, self.handle)
                         for signum in FORWARDED_SIGNALS}

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        """Forward `signum` to the child, or keep it until there is one."""
        if not self.child:
            self.pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):  # exited: its status is on the way
            os.kill(self.child, signum)

    def attach(self, child: int) -> None:
        """Forward to `child` from now on, starting with the signals kept so far."""
        self.child = child
        for signum in self.pending:
            self.handle(signum, None)

    def restore(self) -> None:
        """Put the previous handlers back (nothing ran: the caller takes over)."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def wait_for_exit(sock: socket.socket) -> int:
    """Wait until the server reports the child's exit; return the exit code."""
    sock.settimeout(None)
    answer = receive_json(sock)
    code = answer.get("exit")
    if not isinstance(code, int) or isinstance(code, bool):
        raise ProtocolError(f"the fork server answered {answer!r}, not an exit status")
    return code


def launch(argv: list[str], socket_path: StrPath, key_file: StrPath | None = None) -> int:
    """Have the fork server at `socket_path` run ``flwr-clientapp ARGV``; return its exit code.

    Signals that reach this process are forwarded to the child (``SignalRelay``); one that
    arrives when the server turns out not to run the message ends this process with 128 + N.

    Raises
    ------
    ForkServerUnavailable
        If nothing ran and no signal asked this process to stop: the caller may run the
        ClientApp itself.
    """
    relay = SignalRelay()
    try:
        sock = connect(socket_path, key_file or default_key_file(socket_path))
        with sock:
            child = request_fork(sock, argv)
            relay.attach(child)
            try:
                return wait_for_exit(sock)
            except (OSError, ProtocolError) as error:
                say(f"lost the fork server at {socket_path} before ClientApp process {child} "
                    f"ended ({error})")
                return 1
    except ForkServerUnavailable:
        relay.restore()
        if relay.pending:
            return 128 + relay.pending[0]
        raise
    except (OSError, ProtocolError) as error:
        say(f"the fork server at {socket_path} did not answer the request ({error}); not "
            "running the message again")
        return 1


def ping(socket_path: StrPath, key_file: StrPath | None = None) -> dict[str, object]:
    """Ask the fork server at `socket_path` for its state (pid, flwr, threads, problems).

    Raises
    ------
    ForkServerUnavailable
        If it cannot be reached, the key handshake fails or it does not answer.
    """
    sock = connect(socket_path, key_file or default_key_file(socket_path))
    with sock:
        try:
            send_json(sock, ForkRequest(kind="ping").to_json())
            answer = receive_json(sock)
        except (OSError, ProtocolError) as error:
            raise ForkServerUnavailable(f"the fork server at {socket_path} did not answer a "
                                        f"ping ({error})") from None
    if answer.get("pong") is not True:
        raise ForkServerUnavailable(f"the fork server at {socket_path} answered a ping with "
                                    f"{str(answer)[:200]}")
    return answer
