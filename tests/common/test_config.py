import tomllib
from pathlib import Path

import pytest

from common.config import DEFAULTS, RunConfig

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_pyproject_defaults_equal_code_defaults():
    app_config = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert app_config == DEFAULTS


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
        ({"batch-size": True}, "batch-size must be a int"),
        ({"no-such-key": 1}, "unknown run-config keys"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_invalid_run_config_names_key(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("'", "'")):
        RunConfig.from_run_config(override)
