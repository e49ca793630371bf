"""The docs cannot drift from the code: every command block marked runnable is run as written.

A fenced block whose info string is ``bash runnable`` (or ``bash runnable slow`` for one that
trains or starts Flower) in README.md or any docs/**/*.md is extracted and run with bash in a
fresh temporary directory. Blocks of one page that name the same shell (``bash runnable
shell=NAME``; a walk-through whose steps build on each other) run as one script, in order, in
one directory, as typed into one terminal; the first block's line names them. Either way:
``set -euo pipefail``, the venv's bin first on PATH, FEDCARE_HOME and FLWR_HOME inside the
temporary directory. Each block runs in its own process group (its own session) and carries a
marker in its environment; whatever it leaves running, or runs past the timeout, is killed by
group and by marker. Slow blocks carry pytest's ``slow`` mark.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.processes import marked_pids, signal_all

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
QUICK_TIMEOUT_S = 60.0
SLOW_TIMEOUT_S = 900.0
MARKER_VARIABLE = "FEDCARE_DOCS_BLOCK_MARKER"


@dataclass(frozen=True)
class Block:
    """One fenced command block: where it is, whether it is slow, and its script."""

    path: Path
    line: int  # 1-based line of the opening fence
    slow: bool
    script: str

    @property
    def name(self) -> str:
        """``docs/tasks.md:42``: how a failure names the block."""
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.line}"


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/, sorted."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def fenced_blocks(path: Path) -> list[tuple[int, list[str], str]]:
    """Every fenced block in `path`: (opening line, info-string words, body)."""
    blocks: list[tuple[int, list[str], str]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        fence, start, body = match["fence"], index, []
        index += 1
        while index < len(lines) and not (
                lines[index].strip().startswith(fence)
                and lines[index].strip().strip(fence[0]) == ""):
            body.append(lines[index][len(match["indent"]):])
            index += 1
        blocks.append((start + 1, match["info"].split(), "\n".join(body) + "\n"))
        index += 1  # past the closing fence
    return blocks


SHELL_WORD = "shell="


def runnable_blocks(paths: list[Path] | None = None) -> list[Block]:
    """The blocks marked ``runnable`` in `paths` (default: every doc file), in file order.

    The blocks of one page naming one ``shell=NAME`` become one Block at the first one's line,
    slow if any of them is; each part announces its own line on stderr as it starts.
    """
    found: list[Block] = []
    shells: dict[tuple[Path, str], int] = {}
    for path in doc_files() if paths is None else paths:
        for line, words, body in fenced_blocks(path):
            if "runnable" not in words[1:]:
                continue
            block = Block(path, line, slow="slow" in words[1:], script=body)
            shell = next((w[len(SHELL_WORD):] for w in words[1:] if w.startswith(SHELL_WORD)),
                         None)
            if shell is None:
                found.append(block)
                continue
            part = f"echo '>>> {block.name}' >&2\n{body}"
            if (path, shell) not in shells:
                shells[(path, shell)] = len(found)
                found.append(Block(path, line, block.slow, part))
                continue
            first = found[shells[(path, shell)]]
            found[shells[(path, shell)]] = Block(path, first.line, first.slow or block.slow,
                                                 first.script + part)
    return found


BLOCKS = runnable_blocks()


def _environment(tmp: Path, marker: str) -> dict[str, str]:
    """The reader's shell: the venv's bin first, fedcare's and Flower's homes in `tmp`."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    env.update({"FEDCARE_HOME": str(tmp / "fedcare-home"), "FLWR_HOME": str(tmp / "flower-home"),
                "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0",
                "FLWR_DISABLE_UPDATE_CHECK": "1",
                "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                MARKER_VARIABLE: marker})
    return env


def _group_alive(pgid: int) -> bool:
    """Whether a running process (not a zombie) is left in process group `pgid` (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            return True
    return False


def _stop_everything(process: subprocess.Popen, marker: str) -> None:
    """SIGTERM the block's process group and marked processes, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if _group_alive(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
        signal_all(marked_pids(marker, MARKER_VARIABLE), sig)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(process.pid) \
                    and not marked_pids(marker, MARKER_VARIABLE):
                return
            time.sleep(0.1)


def run_block(block: Block, tmp: Path,
              timeout: float | None = None) -> tuple[int | None, str, float]:
    """Run `block` with bash in `tmp`; return (exit status or None on timeout, output, seconds).

    `timeout` (seconds) defaults to the block's kind: slow or quick.
    """
    marker = uuid.uuid4().hex
    log_path = tmp.parent / f"{tmp.name}.log"
    script = "set -euo pipefail\n" + block.script
    if timeout is None:
        timeout = SLOW_TIMEOUT_S if block.slow else QUICK_TIMEOUT_S
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["bash", "-c", script], cwd=tmp, env=_environment(tmp, marker),
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            status: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            _stop_everything(process, marker)
    return status, log_path.read_text(errors="replace"), time.monotonic() - started


@pytest.mark.parametrize(
    "block",
    [pytest.param(b, id=b.name, marks=[pytest.mark.slow] if b.slow else []) for b in BLOCKS])
def test_runnable_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    status, output, seconds = run_block(block, work)
    if status is None:
        limit = SLOW_TIMEOUT_S if block.slow else QUICK_TIMEOUT_S
        pytest.fail(f"{block.name} did not finish within {limit:.0f} s:\n{output[-4000:]}")
    assert status == 0, f"{block.name} exited {status} after {seconds:.1f} s:\n{output[-4000:]}"
    if not block.slow:
        assert seconds < QUICK_TIMEOUT_S / 2, (
            f"{block.name} took {seconds:.1f} s: mark it slow or make it quicker")


def test_the_docs_have_quick_and_slow_runnable_blocks() -> None:
    # The extraction itself: a typo in the marker would silently leave a doc untested.
    assert any(not b.slow for b in BLOCKS) and any(b.slow for b in BLOCKS)
    for path in doc_files():
        for line, words, _ in fenced_blocks(path):
            marks = {w for w in words[1:] if w.startswith("run") or w == "slow"}
            assert marks <= {"runnable", "slow"}, f"{path.relative_to(ROOT)}:{line}: {words}"
            assert "slow" not in marks or "runnable" in marks, (
                f"{path.relative_to(ROOT)}:{line}: 'slow' without 'runnable'")
            assert "runnable" in marks or not any(
                w.startswith(SHELL_WORD) for w in words[1:]), (
                f"{path.relative_to(ROOT)}:{line}: 'shell=' without 'runnable'")


def test_fenced_blocks_reads_info_strings_and_bodies(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n```bash runnable\necho one\n```\n\n```text\n$ out\n```\n"
                    "````bash runnable slow\n```\ninside\n```\n````\n")
    blocks = fenced_blocks(page)
    assert [(line, words) for line, words, _ in blocks] == [
        (2, ["bash", "runnable"]), (6, ["text"]), (9, ["bash", "runnable", "slow"])]
    assert blocks[0][2] == "echo one\n"
    assert blocks[2][2] == "```\ninside\n```\n"


def test_blocks_naming_one_shell_run_as_one_script_in_order(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```bash runnable shell=walk\nstep=one\nmkdir sub && cd sub\n```\n\n"
                    "```bash runnable\necho alone\n```\n\n"
                    "```bash runnable slow shell=walk\necho \"$step\" > seen\n```\n"
                    "```bash runnable shell=other\necho other\n```\n")
    walk, alone, other = runnable_blocks([page])
    assert [(b.line, b.slow) for b in (walk, alone, other)] == [(1, True), (6, False), (13, False)]
    work = tmp_path / "work"
    work.mkdir()
    status, output, _ = run_block(walk, work)
    # One shell: the second part runs where the first left it, with its variable.
    assert status == 0, output
    assert (work / "sub" / "seen").read_text() == "one\n"
    assert output.splitlines() == [f">>> {page}:1", f">>> {page}:10"]


def _alive(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat")
    return state.exists() and state.read_text().rsplit(") ", 1)[1][:1] != "Z"


@pytest.mark.parametrize(("script", "timeout", "expected"), [
    ("sleep 300 & echo $! > pid\nfalse\necho not reached\n", 30.0, 1),  # set -e stops it
    ("sleep 300 & echo $! > pid\nundefined_variable=$nope\n", 30.0, 1),  # set -u
    ("sleep 300 & echo $! > pid\nfalse | cat\n", 30.0, 1),  # set -o pipefail
    ("sleep 300 & echo $! > pid\nsleep 300\n", 2.0, None),  # the timeout
])
def test_a_failing_or_hanging_block_fails_and_leaves_nothing_running(
        tmp_path: Path, script: str, timeout: float, expected: int | None) -> None:
    work = tmp_path / "work"
    work.mkdir()
    block = Block(ROOT / "README.md", 1, slow=False, script=script)
    status, output, _ = run_block(block, work, timeout=timeout)
    assert status == expected and "not reached" not in output
    assert not _alive(int((work / "pid").read_text()))


def test_a_block_runs_in_a_fresh_directory_with_the_venv_and_its_own_homes(
        tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    script = 'test -z "$(ls -A)"\ncommand -v fedcare\necho "$FEDCARE_HOME $FLWR_HOME"\n'
    status, output, _ = run_block(Block(ROOT / "README.md", 1, False, script), work)
    assert status == 0, output
    assert output.splitlines()[0] == str(Path(sys.executable).parent / "fedcare")
    assert output.splitlines()[1] == f"{work / 'fedcare-home'} {work / 'flower-home'}"
