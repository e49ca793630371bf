import re
import tomllib
from pathlib import Path

import pytest

from common.config import DEFAULTS, RunConfig
from common.errors import RunConfigError

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _flatten(table, prefix=""):
    # Flower flattens [tool.flwr.app.config.dp] into "dp.<key>" the same way.
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_pyproject_defaults_equal_code_defaults():
    app_config = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert _flatten(app_config) == DEFAULTS


def test_defaults_validate_and_round_trip():
    config = RunConfig.from_run_config({})
    assert config.to_run_config() == DEFAULTS
    assert RunConfig.from_run_config(config.to_run_config()) == config


def test_int_accepted_where_float_expected():
    assert RunConfig.from_run_config({"learning-rate": 1}).learning_rate == 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"task": "mnist"}, "unknown task 'mnist'"),
        ({"num-server-rounds": 0}, "num-server-rounds must be >= 1, got 0"),
        ({"hospitals": 5}, "hospitals must be between 1 and 4 for task 'heart-disease', got 5"),
        ({"hospitals": 0}, "hospitals must be >= 1"),
        ({"learning-rate": -0.1}, "learning-rate must be > 0"),
        ({"learning-rate": "fast"}, "learning-rate must be a float"),
        ({"server-optimizer": "sgd"}, "server-optimizer must be one of"),
        ({"weighting": "rows"}, "weighting must be one of"),
        ({"batch-size": True}, "batch-size must be an int"),
        ({"no-such-key": 1}, "unknown run-config keys"),
        ({"dp.epsilon": 0}, "dp.epsilon must be > 0, got 0"),
        ({"dp.epsilon": -1.0}, "dp.epsilon must be > 0"),
        ({"dp.delta": 1.0}, "dp.delta must be in (0, 1), got 1.0"),
        ({"dp.delta": 0.0}, "dp.delta must be in (0, 1)"),
        ({"dp.clipping-norm": 0.0}, "dp.clipping-norm must be > 0"),
        ({"dp.mode": "user"}, "dp.mode must be one of"),
        ({"dp.noise-mode": "distributed"}, "needs --dp hospital --secure-aggregation"),
        ({"secagg.enabled": True, "hospitals": 2},
         "hospitals: secure aggregation needs at least 3"),
        ({"secagg.enabled": True, "secagg.threshold": 5}, "must be <= the number of participants"),
        ({"secagg.enabled": True, "secagg.threshold": 2}, "must be >= floor((n + c)/2) + 1"),
        ({"secagg.enabled": "yes"}, "secagg.enabled must be true or false"),
        ({"min-hospitals": 9}, "min-hospitals must be between 1 and hospitals=4"),
        ({"round-timeout": 0}, "round-timeout must be > 0 seconds"),
        ({"aggregator": "mode"}, "aggregator must be one of"),
        ({"trim-fraction": 0.5}, "trim-fraction must be in [0, 0.5)"),
        ({"aggregator": "median", "secagg.enabled": True},
         "secure aggregation reveals only their sum"),
        ({"aggregator": "trimmed-mean", "weighting": "examples"}, "needs weighting 'uniform'"),
        ({"resume": "yes"}, "resume must be true or false"),
        ({"partition": "dirichlet"},
         "does not apply to task 'heart-disease': its hospitals are real"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_invalid_run_config_names_key(override, message):
    with pytest.raises(RunConfigError, match=re.escape(message)) as raised:
        RunConfig.from_run_config(override)
    assert str(raised.value).startswith(raised.value.key) or "unknown" in message


def test_task_facts_equal_the_loaded_tasks():
    # The facts flags are checked against, without importing scikit-learn, are the tasks' own.
    from common.task_catalog import SIMULATED_TASKS, SPLIT_TASKS, TASK_FACTS
    from common.tasks import CSV_TASK_NAME, TASK_NAMES, TASKS

    assert tuple(TASK_FACTS) == TASK_NAMES and tuple(TASKS) == SIMULATED_TASKS
    for name, task in TASKS.items():
        facts = TASK_FACTS[name]
        assert (facts.default_hospitals, facts.max_hospitals, facts.real_hospitals,
                facts.per_hospital_scaling) == (
            task.default_hospitals, task.max_hospitals, task.fixed_hospital_names,
            task.per_hospital_scaling)
        assert (name in SPLIT_TASKS) == (not task.fixed_hospital_names)
    assert not TASK_FACTS[CSV_TASK_NAME].simulated


def test_checking_a_run_config_imports_no_task_module():
    import subprocess
    import sys

    code = ("import sys; from common.config import RunConfig; "
            "RunConfig.from_run_config({'task': 'digits', 'hospitals': 9}); "
            "print(sorted(m for m in ('numpy', 'sklearn', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PYPROJECT.parent).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("settings", "key"), [
    ({"secagg.threshold": 3}, "secagg.threshold"),
    ({"secagg.honest-contributors": 2}, "secagg.honest-contributors"),
    ({"trim-fraction": 0.2}, "trim-fraction"),
    ({"aggregator": "median", "trim-fraction": 0.2}, "trim-fraction"),
])
def test_a_setting_that_would_do_nothing_is_refused_naming_what_it_needs(settings, key):
    with pytest.raises(RunConfigError, match=f"{key} applies only with") as caught:
        RunConfig.from_run_config(settings)
    assert caught.value.key == key
    # with what it needs, or at its default, the same setting is accepted
    RunConfig.from_run_config({**settings, "aggregator": "trimmed-mean"} if key == "trim-fraction"
                              else {**settings, "secagg.enabled": True, "hospitals": 4})
