"""--resume's planning: settings come from the run directory; conflicts and gaps are errors."""

import json

import numpy as np
import pytest

from common.config import RunConfig
from server.checkpoint import Checkpoint, save_checkpoint
from simulations.engine.resume import conflicting_settings, plan_resume


def _run_dir(tmp_path, *, rounds_done, rounds=4, model=False):
    run_config = RunConfig.from_run_config({"num-server-rounds": rounds, "seed": 3}).to_run_config()
    (tmp_path / "config.json").write_text(json.dumps({"run_config": run_config}))
    if rounds_done:
        save_checkpoint(tmp_path / "checkpoint", Checkpoint(
            round=rounds_done, run_id="r", run_config=run_config,
            weights=[np.zeros(2, np.float32)]))
    if model:
        (tmp_path / "model.keras").write_bytes(b"")
    return tmp_path


def test_plan_takes_the_runs_settings_and_resumes_in_place(tmp_path):
    plan = plan_resume(_run_dir(tmp_path, rounds_done=2), given={"seed": 3})
    assert plan.config.resume and plan.config.seed == 3 and plan.config.num_server_rounds == 4
    assert plan.config.out_dir == str(tmp_path) and plan.completed_rounds == 2
    assert not plan.finished


def test_conflicting_flag_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"seed 5 \(the run has 3\)"):
        plan_resume(_run_dir(tmp_path, rounds_done=2), given={"seed": 5})
    flags = {"seed": "--seed"}
    with pytest.raises(ValueError, match=r"--seed 5 \(the run has 3\)"):
        plan_resume(_run_dir(tmp_path, rounds_done=2), given={"seed": 5}, name=flags.get)
    assert conflicting_settings({"seed": 3, "task": "x"}, {"seed": 3, "task": "x"}) == []


def test_finished_run_is_recognised(tmp_path):
    assert plan_resume(_run_dir(tmp_path, rounds_done=4, model=True), given={}).finished


def test_without_checkpoint_or_config_it_refuses(tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    with pytest.raises(ValueError, match="no checkpoint"):
        plan_resume(_run_dir(started, rounds_done=0), given={})
    with pytest.raises(ValueError, match="not a fedcare run directory"):
        plan_resume(tmp_path / "missing", given={})
