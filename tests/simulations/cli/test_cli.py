"""Bad input to `fedcare simulate` fails fast with a message naming what is wrong."""

import pytest
from typer.testing import CliRunner

from simulations.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "mnist"], "Invalid value for '--task': 'mnist' is not one of"),
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--hospitals", "5"], "--hospitals must be between 1 and 4"),
        (["--task", "digits", "--hospitals", "0"], "--hospitals must be >= 1"),
        # A Dirichlet split that leaves hospitals short: refused before any run directory.
        (["--task", "breast-cancer", "--hospitals", "50", "--partition", "dirichlet",
          "--alpha", "0.05", "--dp", "none"], "short"),
        (["--task", "breast-cancer", "--hospitals", "50", "--partition", "dirichlet",
          "--alpha", "0.05"], "short"),
    ],
)
def test_simulate_rejects_bad_settings(args, message, tmp_path):
    result = runner.invoke(app, ["simulate", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_simulate_refuses_non_empty_out(tmp_path):
    (tmp_path / "keep.txt").write_text("earlier results")
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not empty" in " ".join(result.output.split())
    assert (tmp_path / "keep.txt").read_text() == "earlier results"


def test_delta_at_least_one_over_rows_warns(capsys):
    from common.config import RunConfig
    from simulations.cli.run_settings import warn_delta_vs_rows

    # delta = 0.05 is at least 1/rows at every hospital (Switzerland: 30 training rows).
    warn_delta_vs_rows(RunConfig.from_run_config({"dp.delta": 0.05}))
    err = " ".join(capsys.readouterr().err.split())
    assert "delta=0.05 >= 1/rows at switzerland (30 rows)" in err
    warn_delta_vs_rows(RunConfig.from_run_config({"dp.delta": 1e-5}))
    assert "delta" not in capsys.readouterr().err


def test_verbose_sets_fedcare_verbose_before_the_run(monkeypatch, tmp_path):
    import os
    import sys
    import types

    monkeypatch.setenv("FEDCARE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FEDCARE_VERBOSE", raising=False)
    seen = []
    fake = types.ModuleType("simulations.engine.simulate")
    fake.simulate = lambda config, run_dir, **_: seen.append(os.environ.get("FEDCARE_VERBOSE"))
    monkeypatch.setitem(sys.modules, "simulations.engine.simulate", fake)
    quiet = runner.invoke(app, ["simulate", "--rounds", "1", "--out", str(tmp_path / "a")])
    loud = runner.invoke(app, ["simulate", "--rounds", "1", "--out", str(tmp_path / "b"),
                               "--verbose"])
    assert quiet.exit_code == loud.exit_code == 0
    assert seen == [None, "1"]


def test_engine_option_reaches_the_run_and_refuses_unknown_engines(monkeypatch, tmp_path):
    import sys
    import types

    from simulations.engine.in_process_engine import Engine

    monkeypatch.setenv("FEDCARE_HOME", str(tmp_path / "home"))
    engines = []
    fake = types.ModuleType("simulations.engine.simulate")
    fake.simulate = lambda config, run_dir, *, engine: engines.append(engine)
    monkeypatch.setitem(sys.modules, "simulations.engine.simulate", fake)

    default = runner.invoke(app, ["simulate", "--rounds", "1", "--out", str(tmp_path / "a")])
    ray = runner.invoke(app, ["simulate", "--rounds", "1", "--out", str(tmp_path / "b"),
                              "--engine", "ray"])
    unknown = runner.invoke(app, ["simulate", "--out", str(tmp_path / "c"), "--engine", "spark"])

    assert default.exit_code == ray.exit_code == 0
    assert engines == [Engine.AUTO, Engine.RAY]
    assert unknown.exit_code == 2 and "spark" in unknown.output and "in-process" in unknown.output
