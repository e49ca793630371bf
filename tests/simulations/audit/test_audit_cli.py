"""``fedcare audit``: user errors exit 2 naming the flag; a small audit writes every figure;
Ctrl-C stops it within seconds with exit 130.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulations.cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def fedcare_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDCARE_HOME", str(tmp_path / "fedcare-home"))


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "diabetes"], "--task 'diabetes'"),
    (["--dp", "none"], "--dp 'none'"),
    (["--dp", "hospital", "--noise-mode", "distributed"], "--noise-mode 'distributed'"),
    (["--canaries", "1"], "--canaries must be >= 2"),
    (["--confidence", "1.0"], "--confidence must be in (0, 1)"),
    (["--shadows", "3"], "--shadows must be an even number"),
    (["--canary-kind", "odd"], "--canary-kind must be one of far, random, axis"),
    (["--epsilon", "-1"], "--epsilon (dp.epsilon)"),
    (["--rounds", "0"], "--rounds (num-server-rounds)"),
    (["--task", "breast-cancer", "--hospitals", "1000"], "breast-cancer"),
    (["--task", "heart-disease", "--canary-kind", "axis", "--canaries", "20"],
     "--canaries must be <= 15 with --canary-kind axis"),
], ids=["regression-task", "no-dp", "distributed", "canaries", "confidence", "shadows",
        "canary-kind", "epsilon", "rounds", "too-many-hospitals", "axis-canaries"])
def test_audit_rejects_bad_settings_with_the_flag_named(args, message, tmp_path):
    result = runner.invoke(app, ["audit", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_audit_refuses_a_non_empty_out(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep")
    result = runner.invoke(app, ["audit", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "--force" in result.output


@pytest.mark.slow
def test_a_small_audit_writes_audit_md_json_and_plots(tmp_path):
    # Arrange
    out = tmp_path / "audit"
    # Act
    result = runner.invoke(app, ["audit", "--task", "breast-cancer", "--rounds", "3",
                                 "--canaries", "20", "--shadows", "2", "--out", str(out)])
    # Assert
    assert result.exit_code == 0, result.output
    document = json.loads((out / "audit.json").read_text())
    dp, control = document["arms"]["dp"], document["arms"]["control"]
    assert 0 < dp["accounted_epsilon"] <= 1.0 + 1e-9 and control["accounted_epsilon"] is None
    for arm in (dp, control):
        assert set(arm["views"]) == {"server", "final_model"}
        assert arm["epsilon_lower_bound"] == max(v["epsilon"] for v in arm["views"].values())
        for view in arm["views"].values():
            assert view["confidence"] == pytest.approx(document["view_confidence"])
            assert len(view["scores"]) == 20
        assert set(arm["membership_inference"]) == {"loss", "lira", "dp_tpr_bound"}
    # The canaries' coins are recorded, and match the seeded draw.
    from simulations.audit.canaries import draw_inclusion

    recorded = document["canaries"]["inclusion"]
    assert recorded["in_indices"] == draw_inclusion(20, seed=0).in_indices.tolist()
    assert recorded["n_in"] + recorded["n_out"] == 20
    md = (out / "audit.md").read_text()
    assert "| dp (dp patient) |" in md and "| control (dp none) |" in md
    assert "## What it does not show" in md
    assert (out / "roc-dp.png").stat().st_size > 0 and (out / "roc-control.png").is_file()


@pytest.mark.slow
def test_ctrl_c_stops_the_audit_within_seconds_with_exit_130(tmp_path):
    env = {**os.environ, "FEDCARE_HOME": str(tmp_path / "home"), "COLUMNS": "80"}
    process = subprocess.Popen(
        [sys.executable, "-c", "from simulations.cli.main import main; main()", "audit",
         "--rounds", "50", "--out", str(tmp_path / "audit")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "audit" / "dp").exists():  # the first federation has started
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(2.0)
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 130, output
        assert time.monotonic() - sent < 10
        assert "interrupted by SIGINT" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
