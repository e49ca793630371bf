"""The task registry: name -> TaskSpec (data + model shape + metrics).

The built-in tasks are fixed; task ``csv`` is built from the consortium's schema file
(``task_for_config``: the server's copy at run config ``csv.schema-path``).

The task modules (scikit-learn, pandas: about 1.8 s to import) load on first use of the
registry (``TASKS``, ``get_task``, ...), so a module that needs only the task contract
(``common.tasks.base``, e.g. through ``common.metrics`` and ``common.wire``) stays light.
"""

from collections.abc import Mapping
from functools import cache
from types import MappingProxyType
from typing import TYPE_CHECKING

from common.task_catalog import TASK_FACTS
from common.tasks.base import CSV_TASK_NAME, HospitalData, TaskSpec

if TYPE_CHECKING:
    from common.config import RunConfig

TASK_NAMES: tuple[str, ...] = tuple(TASK_FACTS)  # the built-in tasks, then csv


@cache
def built_in_tasks() -> Mapping[str, TaskSpec]:
    """The built-in tasks by name (read-only), importing their modules on the first call."""
    from common.tasks.heart_disease import TASK as HEART_DISEASE
    from common.tasks.sklearn_sets import BREAST_CANCER, DIABETES, DIGITS, DIGITS_CNN

    tasks = (HEART_DISEASE, BREAST_CANCER, DIABETES, DIGITS, DIGITS_CNN)
    return MappingProxyType({t.name: t for t in tasks})


def __getattr__(name: str) -> object:
    """``TASKS``: the built-in tasks, loaded on first access (PEP 562)."""
    if name == "TASKS":
        return built_in_tasks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_task(name: str) -> TaskSpec:
    """Return the built-in task called `name`; raise ValueError listing the known tasks otherwise.

    Task ``csv`` has no fixed TaskSpec: use ``task_for_config`` (server) or
    ``common.tasks.csv_task.csv_task_spec`` (a hospital, from its own schema).
    """
    if name == CSV_TASK_NAME:
        raise ValueError("task 'csv' is built from the consortium's schema file (run config "
                         "csv.schema-path and csv.schema-sha256); it runs in deployment only")
    try:
        return built_in_tasks()[name]
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
    from common.tasks.csv_task import load_schema_task

    return load_schema_task(config.csv_schema_path, expected_sha256=config.csv_schema_sha256)


def scaling_digest(config: "RunConfig") -> str:
    """The digest of the run's shared normalisation ("" for per-hospital z-scoring).

    What the server states in every round's settings; each hospital compares it with the
    digest of its own copy of the task's (or schema's) public constants.
    """
    return _scaling_digest(config.task, config.normalisation.value, config.csv_schema_path,
                           config.csv_schema_sha256)


@cache
def _scaling_digest(task: str, normalisation: str, schema_path: str, schema_sha256: str) -> str:
    if normalisation != "public":
        return ""
    if task == CSV_TASK_NAME:
        from common.tasks.csv_task import load_schema_task

        spec = load_schema_task(schema_path, expected_sha256=schema_sha256)
    else:
        spec = get_task(task)
    if spec.scaling is None:
        raise ValueError(f"task {task!r} declares no public normalisation")
    return spec.scaling().digest


def load_task_hospitals(
    task: TaskSpec, num_hospitals: int, *, seed: int, partition: str, alpha: float,
    normalisation: str = "public", missing_indicator: bool = True,
) -> list[HospitalData]:
    """Load the task's hospitals, in order (names as in metrics.csv).

    ``normalisation``: "public" (the task's shared constants, the default) or "per-hospital";
    ``missing_indicator``: whether missing values get their indicator columns.

    Raises
    ------
    ValueError
        If the task cannot be split so (too many hospitals, an unknown partition, no Dirichlet
        draw that keeps every hospital's minimum of rows) or normalised so, naming the task.
    """
    return task.load(num_hospitals, seed=seed, partition=partition, alpha=alpha,
                     normalisation=normalisation, missing_indicator=missing_indicator)


__all__ = ["CSV_TASK_NAME", "TASKS", "TASK_NAMES", "HospitalData", "TaskSpec", "built_in_tasks",
           "get_task", "load_task_hospitals", "scaling_digest", "task_for_config"]
