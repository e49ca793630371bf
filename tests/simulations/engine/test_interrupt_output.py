"""After Ctrl-C the hint is the console's last line: children reaped first, their output kept out.

A real process tree: a parent inside ``exit_on_signals`` forwards its child's output to its
own stderr from a thread (as Ray's driver forwards its workers' logs); one child prints a
traceback when it is stopped, another ignores SIGTERM and has to be killed. The parent gets
SIGINT; what its stderr holds after the hint is checked, and that no child is left.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[3]
PARENT = r"""
import subprocess, sys, threading, time
from simulations.engine.process_tree import become_subreaper, exit_on_signals

CHILD = '''
import signal, sys, time
def stopped(signum, frame):
    time.sleep(0.3)
    print("Traceback (most recent call last):\\n  worker died\\nKeyboardInterrupt", flush=True)
    sys.exit(1)
signal.signal(signal.SIGTERM, stopped)
print("worker ready", flush=True)
time.sleep(600)
'''
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"

become_subreaper()
with exit_on_signals(lambda: "stopping the run. Resume with\n  fedcare simulate --resume run"):
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    stubborn = subprocess.Popen([sys.executable, "-c", STUBBORN])

    def forward():  # what Ray's log monitor does with its workers' output
        for line in child.stdout:
            sys.stderr.write(f"(worker pid={child.pid}) {line}")
            sys.stderr.flush()

    threading.Thread(target=forward, daemon=True).start()
    print(f"children {child.pid} {stubborn.pid}", file=sys.stderr, flush=True)
    time.sleep(600)
"""


def test_the_resume_hint_is_the_last_thing_printed_after_children_are_reaped(tmp_path):
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, stderr=err,
                                stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "worker ready" not in log.read_text() or "children" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        children = [int(pid) for pid in
                    log.read_text().split("children ", 1)[1].split()[:2]]

        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=30)

        text = log.read_text()
        assert code == 130, text
        hint = "fedcare: interrupted by SIGINT; stopping the run. Resume with"
        assert hint in text, text
        after = text.split(hint, 1)[1]
        assert after.strip() == "fedcare simulate --resume run"  # nothing after the hint
        before = text.split(hint, 1)[0]
        assert "Traceback" not in before and "killing process" not in before
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                       for pid in children)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
