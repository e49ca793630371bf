"""Each task's hospital cap follows from its data: every hospital keeps its minimum of rows."""

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from common.config import RunConfig
from common.partitioning import max_parts, min_rows_for_split
from common.tasks import get_task
from common.tasks.sklearn_sets import MIN_TEST_ROWS, MIN_TRAIN_ROWS, TEST_FRACTION

SPLIT_TASKS = {"breast-cancer": 569, "diabetes": 442, "digits": 1797}


@pytest.mark.parametrize("rows", range(2, 60))
def test_min_rows_for_split_matches_the_split_it_describes(rows):
    need = min_rows_for_split(MIN_TRAIN_ROWS, MIN_TEST_ROWS, TEST_FRACTION)
    train, test = train_test_split(np.arange(rows), test_size=TEST_FRACTION, random_state=0)
    keeps_minimum = len(train) >= MIN_TRAIN_ROWS and len(test) >= MIN_TEST_ROWS
    assert keeps_minimum == (rows >= need)


@pytest.mark.parametrize(("task", "rows"), SPLIT_TASKS.items())
def test_split_task_cap_is_the_most_hospitals_its_rows_can_feed(task, rows):
    spec = get_task(task)
    need = min_rows_for_split(MIN_TRAIN_ROWS, MIN_TEST_ROWS, TEST_FRACTION)
    assert spec.max_hospitals == max_parts(rows, need) == rows // need
    hospitals = spec.load(spec.max_hospitals, seed=0, partition="iid", alpha=0.5)
    assert len(hospitals) == spec.max_hospitals
    assert min(h.num_train for h in hospitals) >= MIN_TRAIN_ROWS
    assert min(h.num_test for h in hospitals) >= MIN_TEST_ROWS
    with pytest.raises(ValueError, match=rf"between 1 and {spec.max_hospitals} for task '{task}'"):
        spec.load(spec.max_hospitals + 1, seed=0, partition="iid", alpha=0.5)


def test_digits_takes_100_hospitals_and_heart_disease_its_4_real_ones():
    assert get_task("digits").max_hospitals >= 100
    assert RunConfig.from_run_config({"task": "digits", "hospitals": 100}).hospitals == 100
    heart = get_task("heart-disease")
    assert heart.max_hospitals == 4
    assert heart.hospital_names(4) == ["cleveland", "hungary", "switzerland", "va"]
    with pytest.raises(ValueError, match="hospitals must be between 1 and 4"):
        RunConfig.from_run_config({"task": "heart-disease", "hospitals": 5})


def test_dirichlet_split_that_leaves_a_hospital_short_is_refused_naming_it():
    with pytest.raises(ValueError) as caught:
        get_task("digits").load(150, seed=0, partition="dirichlet", alpha=0.5)
    message = str(caught.value)
    assert "task 'digits'" in message and "dirichlet-alpha=0.5" in message
    assert "hospital(s) short (hospital-" in message and "use fewer hospitals" in message


@pytest.mark.parametrize("task", SPLIT_TASKS)
def test_accepted_dirichlet_split_keeps_every_hospitals_minimum(task):
    hospitals = get_task(task).load(10, seed=4, partition="dirichlet", alpha=0.5)
    assert min(h.num_train for h in hospitals) >= MIN_TRAIN_ROWS
    assert min(h.num_test for h in hospitals) >= MIN_TEST_ROWS
