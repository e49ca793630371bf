"""A hospital's ClientApp fork server: Flower's ClientApp runtime imported once, a fork per message.

Flower 1.42's SuperExec starts ``flwr-clientapp`` for every message; a fresh Python that
imports Flower's runtime costs seconds of CPU on a loaded machine. This process imports that
runtime once (``preload``) and, for each request of the hospital's ``flwr-clientapp`` launcher
(``client.fork_launcher``, over ``client.fork_protocol``), forks a child that runs Flower's
``run_clientapp`` with the arguments, environment, working directory, umask and stdio the
SuperExec gave the launcher. Every message still runs in a process of its own; the server
waits for each child and reports its exit status to its launcher.

Fork safety: before every fork the server checks that it runs one thread (Python's and the
operating system's count; numpy's OpenBLAS is held to one thread), has imported no
TensorFlow, Keras, torch or Opacus, and no fedcare module beyond its own four: it holds no
gRPC channel, no hospital key, ledger, data or worker connection for a child to inherit.
Its one secret, the socket's key, is overwritten in each child before anything else runs.

``fedcare-clientapp-server --socket PATH [--authkey-file FILE]``: the key file is made (random,
0600) if absent; the socket is 0600 and only the server's own user may connect. SIGTERM or
SIGINT stops it: running children get SIGTERM, and the socket file is removed.
"""

import argparse
import contextlib
import logging
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NoReturn

from client.fork_protocol import (
    HANDSHAKE_SECONDS,
    STDIO,
    ForkRequest,
    ProtocolError,
    check_socket_path,
    default_key_file,
    ensure_key,
    parse_request,
    receive_json,
    receive_stdio,
    send_json,
    server_handshake,
    shell_status,
)

logger = logging.getLogger(__name__)

HEAVY_MODULES = ("tensorflow", "keras", "torch", "opacus")
OWN_MODULES = ("client", "client.fork_server", "client.fork_protocol", "client.clientapp_process")
MAX_CHILDREN = 8  # a SuperNode handles one message at a time; more is a runaway launcher
REAP_SECONDS = 0.01  # while children run, the loop checks for exits this often
STOP_GRACE_SECONDS = 5.0
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class ServerStopped(Exception):
    """SIGTERM or SIGINT reached the fork server."""


class ForkRefused(Exception):
    """The server will not fork now (not fork-safe, or too many children): nothing ran."""


def preload() -> list[str]:
    """Import what every child runs: Flower's ClientApp runtime, the modules it imports lazily
    (httpx's transport) and the relay's Flower imports; modules only, nothing is started.

    numpy's OpenBLAS starts worker threads when loaded unless told otherwise; a fork must not
    inherit threads, so the server (and hence each child) uses one BLAS thread. Returns the
    names of the modules imported, sorted.
    """
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # read when numpy loads OpenBLAS: before flwr
    from client import clientapp_process

    clientapp_process.load_runtime()
    clientapp_process.argument_parser()
    import multiprocessing.connection  # noqa: F401 - client.worker_link's, in every child

    import flwr.clientapp  # noqa: F401 - client.entry's
    import flwr.common.serde  # noqa: F401 - client.worker_link's
    import httpcore  # noqa: F401 - httpx's transport, imported when the runtime client is made
    import numpy.random  # noqa: F401 - each child reseeds it

    return sorted(sys.modules)


def os_thread_count() -> int:
    """Count the threads the kernel runs for this process (Linux), else Python's threads."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def fork_safety_problems(*, python_threads: int, os_threads: int,
                         modules: Sequence[str]) -> list[str]:
    """What would make a fork unsafe or leak hospital state into a child ([] when none)."""
    problems = []
    if python_threads != 1 or os_threads != 1:
        problems.append(f"{python_threads} Python and {os_threads} OS threads run (a fork "
                        "copies only the forking one; locks other threads hold stay held)")
    heavy = sorted(name for name in modules if name.split(".")[0] in HEAVY_MODULES)
    if heavy:
        problems.append(f"imported {', '.join(heavy[:5])} (runtimes that are not fork-safe)")
    own = sorted(name for name in modules if name.split(".")[0] in ("client", "common")
                 and name not in OWN_MODULES)
    if own:
        problems.append(f"imported fedcare's {', '.join(own[:5])} (the server holds no "
                        "hospital state)")
    return problems


def current_problems() -> list[str]:
    """``fork_safety_problems`` of this process now."""
    return fork_safety_problems(python_threads=threading.active_count(),
                                os_threads=os_thread_count(), modules=list(sys.modules))


def open_listener(socket_path: Path) -> socket.socket:
    """Listen on `socket_path` (0600); replace a stale socket file, refuse a live one.

    Raises
    ------
    ValueError
        If the path is too long or another process listens there.
    """
    check_socket_path(socket_path)
    if socket_path.exists():
        with socket.socket(socket.AF_UNIX) as probe:
            if probe.connect_ex(str(socket_path)) == 0:
                raise ValueError(f"another process already listens on {socket_path}")
        socket_path.unlink()
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        listener.bind(str(socket_path))
    finally:
        os.umask(previous)
    os.chmod(socket_path, 0o600)
    listener.listen(16)
    return listener


def peer_uid(conn: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", credentials)[1])


@dataclass
class ForkServer:
    """The listening socket, its key, and the running children (pid -> launcher connection)."""

    listener: socket.socket
    key: bytearray
    preloaded: list[str]
    children: dict[int, socket.socket] = field(default_factory=dict)

    def state(self) -> dict[str, object]:
        """What a ping answers: pid, flwr release, thread counts, fork-safety problems."""
        import flwr

        return {"pong": True, "pid": os.getpid(), "flwr": str(flwr.__version__),
                "python_threads": threading.active_count(), "os_threads": os_thread_count(),
                "modules": sorted(sys.modules), "problems": current_problems(),
                "children": sorted(self.children)}

    def serve(self) -> None:
        """Accept launchers until ``ServerStopped``."""
        while True:
            timeout = REAP_SECONDS if self.children else 1.0
            readable, _, _ = select.select([self.listener], [], [], timeout)
            self.reap()
            if readable:
                conn, _ = self.listener.accept()
                self.answer(conn)

    def answer(self, conn: socket.socket) -> None:
        """Handshake, read and serve one request on `conn` (closed unless a child runs)."""
        conn.settimeout(HANDSHAKE_SECONDS)
        try:
            uid = peer_uid(conn)
            if uid != os.getuid():
                send_json(conn, {"refused": f"only user {os.getuid()} may connect (uid {uid})"})
                raise ProtocolError(f"refused a connection from user {uid}")
            server_handshake(conn, self.key)
            request = parse_request(receive_json(conn))
            if request.kind == "ping":
                send_json(conn, self.state())
            else:
                self.start_child(conn, request)
                return
        except ValueError as error:
            logger.warning("refused a malformed request: %s", error)
            with contextlib.suppress(OSError):
                send_json(conn, {"refused": f"malformed request: {error}"})
        except ForkRefused as error:
            logger.error("refused to fork: %s", error)
            with contextlib.suppress(OSError):
                send_json(conn, {"refused": str(error)})
        except (OSError, ProtocolError) as error:
            logger.warning("a launcher's connection failed: %s", error)
        conn.close()

    def start_child(self, conn: socket.socket, request: ForkRequest) -> None:
        """Receive the launcher's stdio, fork the child, tell the launcher its pid.

        SIGTERM and SIGINT are blocked across the fork: the child must not run the server's
        stop handler (it would clean up the server's socket), so it first restores the default
        handlers, then unblocks them.

        Raises
        ------
        ForkRefused
            If the server cannot fork safely now, or too many children run (nothing forked).
        """
        stdio = receive_stdio(conn)
        try:
            problems = current_problems()
            if problems:
                raise ForkRefused("the fork server is not fork-safe: " + "; ".join(problems))
            if len(self.children) >= MAX_CHILDREN:
                raise ForkRefused(f"{len(self.children)} ClientApp processes already run "
                                  f"(limit {MAX_CHILDREN})")
            sys.stdout.flush()
            sys.stderr.flush()
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                pid = os.fork()
                if pid == 0:
                    run_child(self, conn, request, stdio)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        finally:
            for descriptor in stdio:
                os.close(descriptor)
        self.children[pid] = conn
        logger.info("ClientApp process %d forked", pid)
        with contextlib.suppress(OSError):
            send_json(conn, {"pid": pid})

    def reap(self) -> None:
        """Report every exited child's status to its launcher."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            logger.info("ClientApp process %d exited with %d", pid, shell_status(status))
            with contextlib.suppress(OSError), conn:
                send_json(conn, {"exit": shell_status(status)})

    def stop_children(self) -> None:
        """SIGTERM every running child and wait up to ``STOP_GRACE_SECONDS`` for them."""
        for pid in list(self.children):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(REAP_SECONDS)


def apply_flower_log_level() -> None:
    """Set Flower's console level from this (the child's) ``FLWR_LOG_LEVEL``, as its import
    does in a fresh process (timestamps at DEBUG).
    """
    from flwr.supercore.logger import update_console_handler

    level = os.environ.get("FLWR_LOG_LEVEL", "INFO").upper()
    try:
        update_console_handler(level=level, timestamps=level == "DEBUG")
    except (ValueError, TypeError):
        update_console_handler(level="INFO", timestamps=False)


def become_child(server: ForkServer, conn: socket.socket, request: ForkRequest,
                 stdio: tuple[int, int, int]) -> None:
    """In the forked child: drop the server's state, take the launcher's process context."""
    server.key[:] = bytes(len(server.key))
    server.listener.close()
    conn.close()
    for other in server.children.values():
        other.close()
    server.children.clear()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked across the fork
    for target, source in zip(STDIO, stdio, strict=True):
        os.dup2(source, target)
    os.chdir(request.cwd)
    os.umask(request.umask)
    os.environ.clear()
    os.environ.update(dict(request.env))
    if "numpy" in sys.modules:  # Python's `random` reseeds itself after a fork; numpy's does not
        import numpy as np

        np.random.seed()
    apply_flower_log_level()
    sys.argv = ["flwr-clientapp", *request.argv]


def run_child(server: ForkServer, conn: socket.socket, request: ForkRequest,
              stdio: tuple[int, int, int]) -> NoReturn:
    """In the forked child: run ``flwr-clientapp ARGV`` (the lean entry) and exit with its code.

    Never returns into the server's loop: the child ends with ``os._exit``.
    """
    code = 1
    try:
        become_child(server, conn, request, stdio)
        for descriptor in stdio:
            os.close(descriptor)
        from client import clientapp_process

        clientapp_process.run(list(request.argv))
        code = 0
    except SystemExit as exit_request:
        code = exit_request.code if isinstance(exit_request.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child must reach os._exit whatever happens
        import traceback

        traceback.print_exc()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):
                stream.flush()
        os._exit(code)


def stop_on_signals() -> None:
    """Turn SIGTERM and SIGINT into ``ServerStopped`` (the main loop's `finally` cleans up)."""

    def raise_stopped(signum: int, _frame: FrameType | None) -> None:
        raise ServerStopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, raise_stopped)
    signal.signal(signal.SIGINT, raise_stopped)


def argument_parser() -> argparse.ArgumentParser:
    """``fedcare-clientapp-server``'s arguments."""
    parser = argparse.ArgumentParser(
        prog="fedcare-clientapp-server",
        description="Serve a hospital's per-message flwr-clientapp processes by fork.")
    parser.add_argument("--socket", type=Path, required=True,
                        help="Unix socket to listen on (0600); the SuperNode's environment "
                             "names it as FEDCARE_CLIENTAPP_SERVER")
    parser.add_argument("--authkey-file", type=Path, default=None,
                        help="key file (hex, 0600; made if absent); default <socket>.authkey")
    return parser


def log_to_stderr() -> None:
    """Send this module's log lines to stderr (the server's log); not through the root logger,
    so a child starts with Python's default logging, as a fresh ``flwr-clientapp`` does.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def start(socket_path: Path, key_file: Path) -> ForkServer:
    """Preload, check fork safety, make or read the key and listen: the server, ready.

    Raises
    ------
    ValueError
        If the installed flwr is not the series this was written for, the process is not
        fork-safe after its imports, or the key file or socket path is unusable (says which).
    """
    from client.clientapp_process import FLWR_SERIES, flwr_matches, flwr_version

    preloaded = preload()
    if not flwr_matches():
        raise ValueError(f"written for flwr {FLWR_SERIES}x, found flwr {flwr_version()}; start "
                         "the SuperNode without FEDCARE_CLIENTAPP_SERVER")
    problems = current_problems()
    if problems:
        raise ValueError("not fork-safe after its imports: " + "; ".join(problems))
    try:
        key = ensure_key(key_file)
        listener = open_listener(socket_path)
    except OSError as error:
        raise ValueError(f"cannot listen on {socket_path} with key {key_file}: {error}") from None
    return ForkServer(listener=listener, key=key, preloaded=preloaded)


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``fedcare-clientapp-server``."""
    args = argument_parser().parse_args(argv)
    log_to_stderr()
    try:
        server = start(args.socket, args.authkey_file or Path(default_key_file(args.socket)))
    except ValueError as error:
        sys.exit(f"fedcare-clientapp-server: {error}")
    logger.info("ClientApp fork server listening on %s (pid %d, %d modules preloaded)",
                args.socket, os.getpid(), len(server.preloaded))
    stop_on_signals()
    try:
        server.serve()
    except ServerStopped as stopped:
        logger.info("ClientApp fork server stopping (%s)", stopped)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.stop_children()
        server.listener.close()
        args.socket.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
