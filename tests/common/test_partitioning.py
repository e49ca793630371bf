import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.partitioning import PartitionError, dirichlet_partition, iid_partition
from common.tasks import get_task


def _assert_disjoint_and_complete(parts, num_rows):
    joined = np.concatenate(parts)
    assert len(joined) == num_rows
    assert np.array_equal(np.sort(joined), np.arange(num_rows))


@given(num_rows=st.integers(10, 500), num_parts=st.integers(1, 10), seed=st.integers(0, 2**16))
@settings(max_examples=50, deadline=None)
def test_iid_partition_disjoint_complete_seeded(num_rows, num_parts, seed):
    parts = iid_partition(num_rows, num_parts, rng=np.random.default_rng(seed))
    _assert_disjoint_and_complete(parts, num_rows)
    again = iid_partition(num_rows, num_parts, rng=np.random.default_rng(seed))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("alpha", [0.1, 0.5, 100.0])
def test_dirichlet_partition_disjoint_complete_seeded(alpha):
    labels = np.random.default_rng(0).integers(0, 3, size=600)
    parts = dirichlet_partition(labels, 5, alpha=alpha, rng=np.random.default_rng(7))
    _assert_disjoint_and_complete(parts, len(labels))
    again = dirichlet_partition(labels, 5, alpha=alpha, rng=np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert min(map(len, parts)) >= 10


def test_dirichlet_small_alpha_skews_labels_more_than_large():
    labels = np.repeat(np.arange(4), 250)

    def mean_max_share(alpha):
        parts = dirichlet_partition(labels, 5, alpha=alpha, rng=np.random.default_rng(3))
        return np.mean([np.bincount(labels[p], minlength=4).max() / len(p) for p in parts])

    assert mean_max_share(0.1) > mean_max_share(100.0) + 0.2


def test_partition_seed_changes_split():
    a = iid_partition(100, 4, rng=np.random.default_rng(1))
    b = iid_partition(100, 4, rng=np.random.default_rng(2))
    assert not all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_partition_rejects_impossible_requests():
    with pytest.raises(ValueError, match="alpha must be > 0"):
        dirichlet_partition(np.zeros(100, int), 2, alpha=0.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="cannot give"):
        iid_partition(3, 5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="49 rows cannot give 5 hospitals 10 rows each"):
        iid_partition(49, 5, rng=np.random.default_rng(0), min_rows_per_part=10)


def test_failed_dirichlet_split_names_the_short_parts_of_its_closest_draw():
    labels = np.repeat(np.arange(10), 20)  # 200 rows, 20 parts: every part needs exactly 10
    with pytest.raises(PartitionError) as caught:
        dirichlet_partition(labels, 20, alpha=0.1, rng=np.random.default_rng(0), max_tries=5)
    short = caught.value.short_parts
    assert short and all(0 <= index < 20 and rows < 10 for index, rows in short.items())


@pytest.mark.parametrize("task", ["breast-cancer", "diabetes", "digits"])
@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_split_tasks_give_each_hospital_its_own_test_part(task, partition):
    spec = get_task(task)
    hospitals = spec.load(5, seed=0, partition=partition, alpha=0.5)
    assert [h.name for h in hospitals] == spec.hospital_names(5)
    for hospital in hospitals:
        assert hospital.num_train > 0 and hospital.num_test > 0
        assert hospital.x_train.shape[1] == spec.num_features
    total = sum(h.num_train + h.num_test for h in hospitals)
    assert total == {"breast-cancer": 569, "diabetes": 442, "digits": 1797}[task]
