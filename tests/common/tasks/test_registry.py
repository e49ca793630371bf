"""The task registry loads its task modules on first use; the task contract imports light."""

import subprocess
import sys

from common import tasks


def test_task_names_list_the_registry_and_csv():
    assert (*tasks.TASKS, tasks.CSV_TASK_NAME) == tasks.TASK_NAMES
    assert tasks.get_task("digits") is tasks.TASKS["digits"]


def test_task_contract_and_metrics_import_without_scikit_learn_or_pandas():
    code = ("import sys, common.tasks.base, common.metrics; "
            "heavy = [m for m in ('sklearn', 'pandas', 'common.tasks.csv_task') "
            "if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
