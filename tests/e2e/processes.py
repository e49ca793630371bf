"""Find and stop the processes a test started, by an environment marker they all inherit."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

MARKER = "FEDCARE_TEST_MARKER"
# The run the simulation tests share (conftest's ``reference_run``): a resumed run
# (test_interrupt, test_resume) must end with its model and ledgers, and so must the same seed
# on Ray's engine (test_simulate).
REFERENCE_RUN = ("simulate", "--rounds", "4", "--seed", "3", "--local-steps", "2")


def _state(pid: int) -> str:
    """Return the process state letter from /proc (``Z`` zombie), or ``""`` if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return ""


def alive(pids: list[int]) -> list[int]:
    """Return the pids that are still running (a zombie has exited)."""
    return [pid for pid in pids if _state(pid) not in ("", "Z")]


def marked_pids(marker: str, variable: str = MARKER) -> list[int]:
    """Return running pids whose environment holds ``<variable>=<marker>`` (Linux /proc)."""
    needle = f"{variable}={marker}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return alive(pids)


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    """Poll until every pid has exited or `seconds` pass; return the survivors."""
    deadline = time.monotonic() + seconds
    while (survivors := alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return survivors


def wait_until_gone(marker: str, seconds: float) -> list[int]:
    """Poll until no marked process is alive or `seconds` pass; return the survivors."""
    deadline = time.monotonic() + seconds
    while (survivors := marked_pids(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return survivors


def signal_all(pids: list[int], sig: int) -> None:
    """Send `sig` to each pid that still exists."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_marked(marker: str) -> None:
    """SIGKILL every process carrying the marker (test cleanup, also after a failure)."""
    signal_all(marked_pids(marker), signal.SIGKILL)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on `host` a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_marked(argv: list[str], *, marker: str, log_path: Path, cwd: Path,
                 env: dict[str, str], variable: str = MARKER) -> subprocess.Popen:
    """Start `argv` with the marker in its environment, stdout and stderr into `log_path`.

    Everything the process starts inherits the marker, so ``stop_marked`` finds it all.
    """
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, cwd=cwd, env={**env, variable: marker}, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_for_text(path: Path, text: str, *, seconds: float,
                  process: subprocess.Popen | None = None) -> bool:
    """Poll `path` until it contains `text`; give up after `seconds` or once `process` exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        exited = process is not None and process.poll() is not None
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        if exited:
            return False
        time.sleep(0.2)
    return False


def stop_marked(marker: str, *, grace: float = 10.0, variable: str = MARKER) -> list[int]:
    """SIGTERM every marked process, SIGKILL what is left after `grace` s; return survivors."""
    pids = marked_pids(marker, variable)
    signal_all(pids, signal.SIGTERM)
    rest = wait_gone(pids, grace)
    rest = list(set(rest) | set(marked_pids(marker, variable)))
    signal_all(rest, signal.SIGKILL)
    return wait_gone(rest, 5.0)


def model_weights(run_dir: Path) -> list:
    """The weights of a finished run's model.keras (list of numpy arrays)."""
    import keras

    return keras.saving.load_model(run_dir / "model.keras").get_weights()
