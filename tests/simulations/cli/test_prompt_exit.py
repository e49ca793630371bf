"""The fedcare process ends at once after its command, unless that would cut something short.

Each case runs ``run_then_exit`` in a fresh interpreter (it ends the process).
"""

import subprocess
import sys
from pathlib import Path

import pytest

from simulations.cli.prompt_exit import exit_status

ROOT = Path(__file__).resolve().parents[3]


def _run(body: str) -> subprocess.CompletedProcess:
    script = "import sys\nfrom simulations.cli.prompt_exit import run_then_exit\n" + body
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (2, 2), (130, 130),
                                              ("fedcare: refused", 1)])
def test_exit_status_follows_sys_exit(code, status):
    assert exit_status(code) == status


def test_the_commands_status_and_its_last_output_survive_the_prompt_exit():
    done = _run("def command():\n"
                "    print('written last', end='')\n"
                "    sys.stderr.write('warned')\n"
                "    sys.exit(3)\n"
                "import atexit\n"
                "atexit.register(lambda: print('teardown ran'))\n"
                "run_then_exit(command)\n")

    assert done.returncode == 3
    assert done.stdout == "written last" and done.stderr == "warned"  # no teardown: no atexit


def test_a_thread_still_working_is_waited_for_as_python_does():
    done = _run("import threading, time\n"
                "def late():\n"
                "    time.sleep(0.5)\n"
                "    print('thread finished', flush=True)\n"
                "run_then_exit(lambda: threading.Thread(target=late).start())\n")

    assert done.returncode == 0
    assert "thread finished" in done.stdout


def test_a_live_child_process_makes_the_exit_the_ordinary_one():
    done = _run("import atexit, subprocess\n"
                "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1)'])\n"
                "atexit.register(lambda: print('ordinary exit', child.wait()))\n"
                "run_then_exit(lambda: sys.exit(4))\n")

    assert done.returncode == 4
    assert "ordinary exit 0" in done.stdout
