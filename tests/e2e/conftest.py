import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from processes import REFERENCE_RUN, kill_marked  # noqa: E402

FEDCARE = Path(sys.executable).with_name("fedcare")


@pytest.fixture
def fedcare_cli():
    """Run the `fedcare` command in a subprocess tree marked for cleanup.

    Returns ``run(*args) -> (CompletedProcess, marker)``. Every process the command started
    is killed when the test ends, pass or fail.
    """
    markers = []

    def run(*args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, str]:
        marker = uuid.uuid4().hex
        markers.append(marker)
        env = {**os.environ, "FEDCARE_TEST_MARKER": marker}
        proc = subprocess.run([str(FEDCARE), *args], env=env, capture_output=True, text=True,
                              timeout=timeout)
        return proc, marker

    yield run
    for marker in markers:
        kill_marked(marker)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """One uninterrupted ``fedcare simulate`` (REFERENCE_RUN, the default engine) whose run
    directory several end-to-end tests compare against; every process it started is killed.
    A file that uses it is listed in tests/conftest.py's SHARED_WORKER, so that under
    pytest-xdist it runs on the same worker as the others and this runs once.
    """
    out = tmp_path_factory.mktemp("reference") / "whole"
    marker = uuid.uuid4().hex
    try:
        done = subprocess.run([str(FEDCARE), *REFERENCE_RUN, "--out", str(out)],
                              env={**os.environ, "FEDCARE_TEST_MARKER": marker},
                              capture_output=True, text=True, timeout=900)
    finally:
        kill_marked(marker)
    assert done.returncode == 0, done.stderr[-3000:]
    return out

