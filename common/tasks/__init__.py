"""The task registry: name -> TaskSpec (data + model shape + metrics).

The built-in tasks are fixed; task ``csv`` is built from the consortium's schema file
(``task_for_config``: the server's copy at run config ``csv.schema-path``).
"""

from typing import TYPE_CHECKING

from common.tasks.base import HospitalData, TaskSpec
from common.tasks.csv_task import CSV_TASK_NAME, load_schema_task
from common.tasks.heart_disease import TASK as HEART_DISEASE
from common.tasks.sklearn_sets import BREAST_CANCER, DIABETES, DIGITS

if TYPE_CHECKING:
    from common.config import RunConfig

TASKS: dict[str, TaskSpec] = {t.name: t for t in (HEART_DISEASE, BREAST_CANCER, DIABETES, DIGITS)}
TASK_NAMES: tuple[str, ...] = (*TASKS, CSV_TASK_NAME)


def get_task(name: str) -> TaskSpec:
    """Return the built-in task called `name`; raise ValueError listing the known tasks otherwise.

    Task ``csv`` has no fixed TaskSpec: use ``task_for_config`` (server) or
    ``common.tasks.csv_task.csv_task_spec`` (a hospital, from its own schema).
    """
    if name == CSV_TASK_NAME:
        raise ValueError("task 'csv' is built from the consortium's schema file (run config "
                         "csv.schema-path and csv.schema-sha256); it runs in deployment only")
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}") from None


def task_for_config(config: "RunConfig") -> TaskSpec:
    """Return the run's task: a built-in one, or task csv from its ``csv.schema-path``.

    Raises
    ------
    ValueError
        For task csv: if the schema file is unusable or its sha256 differs from the run
        config's ``csv.schema-sha256`` (both named).
    """
    if config.task != CSV_TASK_NAME:
        return get_task(config.task)
    return load_schema_task(config.csv_schema_path, expected_sha256=config.csv_schema_sha256)


def load_task_hospitals(
    task: TaskSpec, num_hospitals: int, *, seed: int, partition: str, alpha: float
) -> list[HospitalData]:
    """Load the task's hospitals, in order (names as in metrics.csv)."""
    return task.load(num_hospitals, seed=seed, partition=partition, alpha=alpha)


__all__ = ["CSV_TASK_NAME", "TASKS", "TASK_NAMES", "HospitalData", "TaskSpec", "get_task",
           "load_task_hospitals", "task_for_config"]
