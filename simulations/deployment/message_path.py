"""deploy-local's per-message path: a ClientApp fork server per hospital, fedcare's SuperNode.

Each hospital gets a ``fedcare-clientapp-server`` (``client.fork_server``) beside its worker:
``hospitals/<name>/fork.sock`` and ``fork.authkey`` (0600; names no longer than the worker's,
so a path the worker's socket fits in fits this one too), log
``logs/<name>-clientapp-server.log``. Its SuperNode's environment names them
(``FEDCARE_CLIENTAPP_SERVER``, ``FEDCARE_CLIENTAPP_SERVER_KEY``), so the ``flwr-clientapp``
its SuperExec starts per message (``<out>/bin/flwr-clientapp``, fedcare's lean entry) has the
server fork the ClientApp process instead of starting Python and importing Flower.

With an idle poll set, each SuperNode is ``fedcare-supernode --idle-poll-seconds S``
(``client.short_poll_supernode``: Flower's SuperNode with its 3 s idle sleep shortened); if
the installed flwr is not the release that entry point patches, Flower's ``flower-supernode``
runs instead and deploy-local says so.
"""

import time
from collections.abc import Callable
from pathlib import Path

from simulations.deployment.flower_processes import ProcessSet

FORK_SERVERS_READY_SECONDS = 120.0  # each server imports Flower's runtime once


class ForkServerError(RuntimeError):
    """A fork server did not come up ready and fork-safe (the message names it and why)."""


def fork_server_files(hospital_dir: Path) -> tuple[Path, Path]:
    """A hospital's fork server: (Unix socket, key file) in its directory."""
    return hospital_dir / "fork.sock", hospital_dir / "fork.authkey"


def fork_server_argv(bin_dir: Path, socket_path: Path, key_file: Path) -> list[str]:
    """``fedcare-clientapp-server`` listening on `socket_path` with `key_file`."""
    return [str(bin_dir / "fedcare-clientapp-server"), "--socket", str(socket_path),
            "--authkey-file", str(key_file)]


def fork_server_env(socket_path: Path, key_file: Path) -> dict[str, str]:
    """What a SuperNode's environment names so its ``flwr-clientapp`` uses the fork server."""
    from client.fork_protocol import KEY_VARIABLE, SERVER_VARIABLE

    return {SERVER_VARIABLE: str(socket_path), KEY_VARIABLE: str(key_file)}


def start_fork_servers(processes: ProcessSet, bin_dir: Path,
                       hospital_dirs: dict[str, Path]) -> dict[str, tuple[Path, Path]]:
    """Start one fork server per hospital (name -> its directory); return name -> files.

    Raises
    ------
    ValueError
        If a socket path is too long for a Unix socket (naming it).
    """
    from client.fork_protocol import check_socket_path

    files = {}
    for name, directory in hospital_dirs.items():
        socket_path, key_file = fork_server_files(directory)
        check_socket_path(socket_path)
        directory.mkdir(parents=True, exist_ok=True)
        processes.start(f"{name}-clientapp-server",
                        fork_server_argv(bin_dir, socket_path, key_file), cwd=directory)
        files[name] = (socket_path, key_file)
    return files


def ping_until_ready(socket_path: Path, key_file: Path, *, deadline: float,
                     check: Callable[[], None]) -> dict[str, object]:
    """Ping the fork server at `socket_path` until it answers or the monotonic `deadline`.

    Raises
    ------
    ForkServerError
        If it has not answered by `deadline` (with the last reason).
    """
    from client.fork_launcher import ForkServerUnavailable, ping

    reason = f"no key file at {key_file} yet"
    while time.monotonic() < deadline:
        check()
        if key_file.exists():
            try:
                return ping(socket_path, key_file)
            except ForkServerUnavailable as error:
                reason = str(error)
        time.sleep(0.1)
    raise ForkServerError(f"the ClientApp fork server at {socket_path} was not ready: {reason}")


def wait_for_fork_servers(files: dict[str, tuple[Path, Path]], *, check: Callable[[], None],
                          timeout: float = FORK_SERVERS_READY_SECONDS) -> list[int]:
    """Wait until every fork server answers a ping; return their pids.

    `check` is called between attempts and may raise (a server process exited).

    Raises
    ------
    ForkServerError
        If a server is not ready within `timeout` s, or answers that it is not fork-safe.
    """
    deadline, pids = time.monotonic() + timeout, []
    for name, (socket_path, key_file) in files.items():
        state = ping_until_ready(socket_path, key_file, deadline=deadline, check=check)
        if state.get("problems"):
            raise ForkServerError(f"{name}'s ClientApp fork server is not fork-safe: "
                               f"{state['problems']}")
        pids.append(int(str(state["pid"])))
    return pids


def supernode_entry(bin_dir: Path, idle_poll_seconds: float | None,
                    report: Callable[[str], None]) -> list[str]:
    """The SuperNode's program: ``fedcare-supernode --idle-poll-seconds S``, or Flower's
    ``flower-supernode`` if `idle_poll_seconds` is None or the installed flwr is not the
    release ``fedcare-supernode`` patches (then reported).
    """
    flowers = [str(bin_dir / "flower-supernode")]
    if idle_poll_seconds is None:
        return flowers
    import inspect

    import flwr

    from client.short_poll_supernode import patch_problems, supernode_module

    problems = patch_problems(str(flwr.__version__), inspect.getsource(supernode_module()))
    if problems:
        report(f"Flower's own SuperNode (3 s idle poll): {'; '.join(problems)}")
        return flowers
    return [str(bin_dir / "fedcare-supernode"), "--idle-poll-seconds", f"{idle_poll_seconds:g}"]
