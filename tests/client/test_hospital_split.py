"""A process splits a task's data once and serves every hospital from that split."""

import numpy as np

import client.hospital as hospital


def test_one_split_serves_every_hospital(monkeypatch):
    calls = []
    real = hospital.load_task_hospitals

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(hospital, "load_task_hospitals", counting)
    hospital.task_split.cache_clear()
    try:
        served = [hospital.load_hospital("digits", 100, index, seed=3, partition="iid", alpha=0.5)
                  for _ in range(2) for index in range(100)]
        assert calls == [100]
        assert [h.name for h in served[:100]] == [f"hospital-{i}" for i in range(100)]
        assert all(a is b for a, b in zip(served[:100], served[100:], strict=True))
        other_seed = hospital.load_hospital("digits", 100, 0, seed=4, partition="iid", alpha=0.5)
        assert calls == [100, 100]
        assert not np.array_equal(other_seed.y_train, served[0].y_train)
    finally:
        hospital.task_split.cache_clear()
