"""The task registry: name -> TaskSpec (data + model shape + metrics)."""

from common.tasks.base import HospitalData, TaskSpec
from common.tasks.heart_disease import TASK as HEART_DISEASE
from common.tasks.sklearn_sets import BREAST_CANCER, DIABETES, DIGITS

TASKS: dict[str, TaskSpec] = {t.name: t for t in (HEART_DISEASE, BREAST_CANCER, DIABETES, DIGITS)}


def get_task(name: str) -> TaskSpec:
    """Return the task called `name`; raise ValueError listing the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def load_task_hospitals(
    task: TaskSpec, num_hospitals: int, *, seed: int, partition: str, alpha: float
) -> list[HospitalData]:
    """Load the task's hospitals, in order (names as in metrics.csv)."""
    return task.load(num_hospitals, seed=seed, partition=partition, alpha=alpha)


__all__ = ["TASKS", "HospitalData", "TaskSpec", "get_task", "load_task_hospitals"]
