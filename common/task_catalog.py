"""What each task is, as far as checking a run's settings needs, without loading its data.

Loading a task imports scikit-learn and pandas (seconds); checking ``--hospitals 99`` or
``--partition dirichlet`` must not, nor even import numpy (``common.tasks`` does). These facts
restate the TaskSpecs of ``common/tasks/`` (a test keeps them equal): how many hospitals by
default and at most, whether the hospitals are real ones (the data comes already divided, so
there is nothing to split) and whether ``fedcare simulate`` can run the task at all.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

CSV_TASK_NAME = "csv"  # common.tasks.base.CSV_TASK_NAME (this module imports no task code)


@dataclass(frozen=True, slots=True)
class TaskFacts:
    """A task's hospitals: how many, and whether they are real or split from one data set.

    Attributes
    ----------
    name : str
        The task's command-line name.
    default_hospitals : int
        Hospitals used when the run does not say.
    max_hospitals : int | None
        The most hospitals the task takes (None: no bound, each hospital brings its own file).
    real_hospitals : tuple[str, ...]
        The real hospitals, in order, for a task whose data comes divided by hospital; empty
        for a task split here (IID or Dirichlet) and for task csv.
    simulated : bool
        Whether ``fedcare simulate`` runs it (task csv needs each hospital's own file).
    per_hospital_scaling : bool
        Whether per-hospital z-scoring is a setting (features without a fixed scale).
    """

    name: str
    default_hospitals: int
    max_hospitals: int | None
    real_hospitals: tuple[str, ...] = ()
    simulated: bool = True
    per_hospital_scaling: bool = False

    @property
    def split(self) -> bool:
        """Whether its hospitals are parts of one data set (so a partition applies)."""
        return self.simulated and not self.real_hospitals


_FACTS = (
    TaskFacts("heart-disease", default_hospitals=4, max_hospitals=4,
              real_hospitals=("cleveland", "hungary", "switzerland", "va"),
              per_hospital_scaling=True),
    # Split tasks: rows // 10 hospitals at most (each keeps >= 7 training and 3 test rows).
    TaskFacts("breast-cancer", default_hospitals=10, max_hospitals=56),
    TaskFacts("diabetes", default_hospitals=4, max_hospitals=44, per_hospital_scaling=True),
    TaskFacts("digits", default_hospitals=10, max_hospitals=179),
    TaskFacts("digits-cnn", default_hospitals=10, max_hospitals=179),  # digits, CNN model
    TaskFacts(CSV_TASK_NAME, default_hospitals=3, max_hospitals=None, simulated=False,
              per_hospital_scaling=True),
)
TASK_FACTS: Mapping[str, TaskFacts] = MappingProxyType({f.name: f for f in _FACTS})
SIMULATED_TASKS: tuple[str, ...] = tuple(f.name for f in _FACTS if f.simulated)
SPLIT_TASKS: tuple[str, ...] = tuple(f.name for f in _FACTS if f.split)
