"""The scale benchmark's instruments: tree memory sees children, the watcher sees round 1."""

import subprocess
import sys
import threading
import time

import pytest

from benchmarks.scale import RunWatcher, SizeResult, _sizes, print_table, tree_memory


def test_tree_memory_counts_a_childs_memory():
    before, _ = tree_memory()
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; b = bytearray(300 * 2**20)"
                              "; b[::4096] = b'x' * len(b[::4096]); print(flush=True); "
                              "time.sleep(60)"], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()  # the child has touched its 300 MB
        during, during_pss = tree_memory()
    finally:
        child.kill()
        child.wait()
    assert during - before > 250 * 2**20
    assert during_pss > 250 * 2**20


def test_watcher_times_the_first_metrics_row_and_keeps_the_peak(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("round,seconds\n")
    timer = threading.Timer(0.5, lambda: path.write_text("round,seconds\n1,0.4\n"))
    with RunWatcher(path, interval=0.05) as watcher:
        timer.start()
        time.sleep(1.0)
    assert 0.45 <= watcher.first_row_seconds <= 0.9
    assert watcher.peak_rss >= tree_memory()[0] * 0.5 > 0


def test_table_gives_cost_per_added_hospital_between_consecutive_sizes(capsys):
    results = [SizeResult(n, 10.0, 12.0, steady, 2 * 10**9, 10**9)
               for n, steady in ((10, 0.5), (25, 0.8), (50, 1.3), (100, 2.3))]
    print_table(results, "title")
    out = capsys.readouterr().out
    assert "20.0" in out  # (0.8 - 0.5) / 15 s per hospital = 20 ms
    assert "50->100 over 10->25: 1.00" in out  # 20 ms both
    assert "steady round at 100 hospitals: 2.30 s" in out


def test_sizes_must_increase():
    assert _sizes("10,25,50,100") == [10, 25, 50, 100]
    for bad in ("10,10", "25,10", "0,5", "ten"):
        with pytest.raises(Exception, match="must be"):
            _sizes(bad)
