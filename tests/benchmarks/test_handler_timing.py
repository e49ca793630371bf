"""The handler records: per-round sums and the first round's start-up split."""

import pytest

from benchmarks.handler_timing import handler_seconds, start_up


def test_first_round_wait_is_split_into_workers_imports_and_first_handler(tmp_path):
    # two hospital processes, created at 110 and 112; first handlers at 120 (2 s) and 121 (4 s)
    (tmp_path / "1.txt").write_text("1 2.0 120.0 110.0\n2 0.5 130.0 110.0\n")
    (tmp_path / "2.txt").write_text("2 0.25 131.0 112.0\n1 4.0 121.0 112.0\n")
    split = start_up(tmp_path, began=100.0, round_one=108.0)
    assert split.server_ready == pytest.approx(8.0)
    assert split.to_workers == pytest.approx(10.0)
    assert split.worker_imports == pytest.approx((10.0 + 9.0) / 2)
    assert split.first_handler == pytest.approx(3.0)
    assert handler_seconds(tmp_path) == {1: (6.0, 4.0, 2), 2: (0.75, 0.5, 2)}


def test_no_records_is_an_error_naming_the_directory(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)):
        start_up(tmp_path, began=0.0, round_one=1.0)
