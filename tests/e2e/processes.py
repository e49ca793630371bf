"""Find and stop the processes a test started, by an environment marker they all inherit."""

import os
import signal
import time
from pathlib import Path


def marked_pids(marker: str) -> list[int]:
    """Return live pids whose environment holds FEDCARE_TEST_MARKER=<marker> (Linux /proc)."""
    needle = f"FEDCARE_TEST_MARKER={marker}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                if (proc / "stat").read_text().split(") ")[1][0] != "Z":
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def wait_until_gone(marker: str, seconds: float) -> list[int]:
    """Poll until no marked process is alive or `seconds` pass; return the survivors."""
    deadline = time.monotonic() + seconds
    while (alive := marked_pids(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def kill_marked(marker: str) -> None:
    """SIGKILL every process carrying the marker (test cleanup, also after a failure)."""
    for pid in marked_pids(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
