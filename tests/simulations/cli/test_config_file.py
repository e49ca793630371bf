"""`fedcare simulate --config FILE`: the file `flwr run . --run-config FILE` takes, flags over
it, and the run directory saying where each setting came from.
"""

import json
import sys
import types

import pytest
from typer.testing import CliRunner

from common.config_sources import ConfigFileError, read_config_file
from simulations.cli.main import app

RUN_TOML = """\
num-server-rounds = 5
seed = 3
"dp.epsilon" = 2.0

[secagg]
threshold = 0
"""


@pytest.fixture
def captured_run(monkeypatch, tmp_path):
    """Stand in for the simulation itself: record what `simulate` would run."""
    monkeypatch.setenv("FEDCARE_HOME", str(tmp_path / "home"))
    runs = []
    fake = types.ModuleType("simulations.engine.simulate")
    fake.simulate = lambda config, run_dir, **_: runs.append((config, run_dir))
    monkeypatch.setitem(sys.modules, "simulations.engine.simulate", fake)
    return runs


def _invoke(*args):
    result = CliRunner().invoke(app, ["simulate", *map(str, args)])
    return result, " ".join(result.output.split())


def _squeezed(text):
    """`text` without whitespace: the console wraps a long path mid-name at its width."""
    return "".join(text.split())


def test_flags_override_the_config_file_and_each_source_is_recorded(captured_run, tmp_path):
    # Arrange
    config_file = tmp_path / "run.toml"
    config_file.write_text(RUN_TOML)
    out = tmp_path / "run"

    # Act
    result, said = _invoke("--config", config_file, "--rounds", "2", "--dp", "hospital",
                           "--out", out)

    # Assert
    assert result.exit_code == 0, said
    [(config, run_dir)] = captured_run
    assert (config.num_server_rounds, config.seed, config.dp_epsilon) == (2, 3, 2.0)
    assert config.dp_mode == "hospital" and config.secagg_threshold == 0
    assert config.hospitals == 4 and config.out_dir == str(out)  # the task's, and --out
    sources = json.loads((run_dir / "config-sources.json").read_text())
    in_file = f"file {config_file.resolve()}"
    assert sources["num-server-rounds"] == "flag --rounds"  # in the file too: the flag wins
    assert sources["dp.mode"] == "flag --dp" and sources["out-dir"] == "flag --out"
    assert sources["seed"] == sources["dp.epsilon"] == sources["secagg.threshold"] == in_file
    assert sources["learning-rate"] == sources["hospitals"] == "default"
    assert set(sources) == set(config.to_run_config()) - {"resume"}


def test_config_json_takes_over_the_recorded_sources(tmp_path):
    from common.config import RunConfig
    from server.federation import _write_config
    from server.run_directory import write_config_sources

    write_config_sources(tmp_path, {"seed": "flag --seed", "task": "default"})
    _write_config(tmp_path, RunConfig(), "run-id", ["cleveland"], None)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["sources"] == {"seed": "flag --seed", "task": "default"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("num-server-rounds = 5\nlearning-rat = 0.1\n",
         "unknown run-config key 'learning-rat'; did you mean learning-rate?"),
        ("[dp]\nepsylon = 2.0\n", "unknown run-config key 'dp.epsylon'; did you mean dp.epsilon?"),
        ("rounds = 5\n", "unknown run-config key 'rounds'; the file takes run-config keys: "
                         "'num-server-rounds' (what --rounds sets)"),
        ("resume = true\n", "key 'resume' is not taken from a file here: continue a run with "
                            "`fedcare simulate --resume DIR`"),
        ("num-server-rounds = [1, 2]\n", "num-server-rounds must be a string, a number or"),
        ("num-server-rounds = 5\n[dp\n", "not a valid TOML file"),
        ("num-server-rounds = \n", "not a valid TOML file"),
        ("num-server-rounds = 0\n", ": num-server-rounds must be >= 1, got 0"),
        ('task = "csv"\n', "task csv runs in deployment only"),
    ],
    ids=["misspelt", "misspelt-in-table", "flag-name", "refused", "list", "table", "value",
         "range", "csv"],
)
def test_a_bad_config_file_is_refused_naming_the_file_and_key(text, message, captured_run,
                                                             tmp_path):
    config_file = tmp_path / "bad.toml"
    config_file.write_text(text)
    result, said = _invoke("--config", config_file, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert _squeezed(str(config_file)) in _squeezed(said) and message in said
    assert "Traceback" not in said and not captured_run and not (tmp_path / "run").exists()


def test_a_missing_config_file_is_named(captured_run, tmp_path):
    result, said = _invoke("--config", tmp_path / "none.toml")
    assert result.exit_code == 2
    assert _squeezed(f"--config {tmp_path / 'none.toml'}: cannot read it") in _squeezed(said)


def test_the_file_reads_as_flwr_run_reads_it(tmp_path):
    # The very file `flwr run . --run-config FILE` takes: Flower's own parser agrees.
    from flwr.common.config import parse_config_args

    config_file = tmp_path / "run.toml"
    config_file.write_text(RUN_TOML + '\n[dp]\nmode = "none"\n"noise-mode" = "local"\n')
    assert read_config_file(config_file) == parse_config_args([str(config_file)])
    assert read_config_file(config_file)["dp.mode"] == "none"


def test_a_key_the_caller_sets_itself_is_refused_with_the_reason(tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text('out-dir = "/tmp/x"\n')
    with pytest.raises(ConfigFileError, match="out-dir.*the caller's reason"):
        read_config_file(config_file, refused={"out-dir": "the caller's reason"})
