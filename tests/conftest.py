"""Test-wide settings: quiet TensorFlow, CPU only, no telemetry (these machines are offline)."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture
def short_tmp_path() -> Iterator[Path]:
    """A fresh, private directory with a short path, removed after the test.

    For tests that put Unix sockets in it: a socket's path is at most 107 bytes, and
    ``tmp_path`` under pytest-xdist (``.../pytest-N/popen-gw0/<test name>0``) leaves too
    little of that for a deployment's ``hospitals/<name>/worker.sock``.
    """
    path = Path(tempfile.mkdtemp(prefix="fc-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# Test files that share a session-scoped fixture: under pytest-xdist each worker process has
# its own session, so they go to one worker and the fixture runs once.
SHARED_WORKER = {
    "tests/e2e/test_simulate.py": "reference_run",
    "tests/e2e/test_interrupt.py": "reference_run",
    "tests/e2e/test_resume.py": "reference_run",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Under ``--dist loadfile``: one unit of work per file, or per group in SHARED_WORKER."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path: str = super()._split_scope(nodeid)
            return SHARED_WORKER.get(path, path)

    return SharedFixtureScheduling(config, log)
