"""The processes a local deployment starts, and stopping every one of them, by pid.

Each process gets its own log file, its own session (a Ctrl-C in the terminal reaches only
the orchestrator, which then stops them in order), a parent-death signal (Linux: if the
orchestrator is killed, its direct children get SIGTERM) and an environment marker that every
descendant inherits. ``stop`` signals the started pids, their descendants and every process
carrying the marker (Flower's SuperExec starts itself in a new session, so process groups
would miss it): SIGTERM, a grace period, then SIGKILL.
"""

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

MARKER_VARIABLE = "FEDCARE_DEPLOYMENT_ID"
_PR_SET_PDEATHSIG = 1


# Resolved in the parent: the child between fork and exec should only make the call.
_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux only)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class StartedProcess:
    """One started process: a name for messages, its Popen and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)  # how it was started, to start it again
    cwd: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class ProcessSet:
    """Start processes with a shared marker; stop them and all their descendants."""

    env: dict[str, str]
    log_dir: Path
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: list[StartedProcess] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, cwd: Path,
              extra_env: dict[str, str] | None = None) -> StartedProcess:
        """Start `argv` in `cwd` (environment: ours plus `extra_env`), output to
        ``<log_dir>/<name>.log``.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        env = {**self.env, **(extra_env or {}), MARKER_VARIABLE: self.marker}
        with open(log_path, "ab") as log_file:
            popen = subprocess.Popen(  # noqa: S603 - argv is built by fedcare, no shell
                argv, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
        process = StartedProcess(name=name, popen=popen, log_path=log_path, argv=list(argv),
                                 cwd=cwd, extra_env=dict(extra_env or {}))
        self.started.append(process)
        logger.info("started %s (pid %d), log %s", name, popen.pid, log_path)
        return process

    def restart(self, process: StartedProcess) -> StartedProcess:
        """Start an exited `process` again, as it was started (its log is appended to).

        The exited one is reaped and replaced in ``started`` by the new one.

        Raises
        ------
        ValueError
            If `process` is still running or was not started by this set.
        """
        if process.popen.poll() is None or process not in self.started or process.cwd is None:
            raise ValueError(f"{process.name} (pid {process.popen.pid}) is not an exited "
                             "process of this set")
        self.started.remove(process)
        return self.start(process.name, process.argv, cwd=process.cwd,
                          extra_env=process.extra_env)

    def exited(self) -> list[StartedProcess]:
        """The started processes that have already exited."""
        return [p for p in self.started if p.popen.poll() is not None]

    def marked(self) -> list[psutil.Process]:
        """Running processes carrying this set's marker (its processes and their descendants)."""
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get(MARKER_VARIABLE) == self.marker:
                    found.append(process)
            except (psutil.Error, OSError):
                continue
        return found

    def _targets(self) -> list[psutil.Process]:
        targets: dict[int, psutil.Process] = {}
        for started in self.started:
            try:
                parent = psutil.Process(started.popen.pid)
                for process in [parent, *parent.children(recursive=True)]:
                    targets[process.pid] = process
            except psutil.Error:
                continue
        for process in self.marked():
            targets.setdefault(process.pid, process)
        return [p for p in targets.values() if p.pid != os.getpid()]

    def stop(self, *, grace_seconds: float = 10.0) -> list[int]:
        """SIGTERM everything started (and descendants), then SIGKILL what is left.

        Returns the pids still running afterwards (empty when all are gone).
        """
        targets = self._targets()
        for process in targets:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(targets, timeout=grace_seconds)
        # A SuperExec or ClientApp may have been started while we waited: catch those too.
        alive = [*alive, *[p for p in self._targets() if p.pid not in {a.pid for a in alive}]]
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        _, still = psutil.wait_procs(alive, timeout=5.0)
        for started in self.started:  # reap our direct children
            with contextlib.suppress(subprocess.TimeoutExpired):
                started.popen.wait(timeout=0.1)
        return [p.pid for p in still]
