"""Whether ``fedcare predict --data`` names a built-in task's hospital (light: no Keras)."""

from pathlib import Path

from common.task_catalog import TASK_FACTS


def builtin_source(data: object) -> tuple[str, str] | None:
    """``(task, hospital)`` when ``--data`` names a built-in task's hospital as
    ``<task>:<hospital>`` (e.g. ``heart-disease:cleveland``) and no such file exists.
    """
    text = str(data)
    task, sep, hospital = text.partition(":")
    if not sep or Path(text).exists() or task not in TASK_FACTS or task == "csv":
        return None
    return task, hospital
