"""A bad option of the real `fedcare` command: named by its flag, with what is allowed, exit 2,
in under 2 s (nothing heavy is imported before the check), and no traceback or run directory.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import RunConfig

FEDCARE = Path(sys.executable).with_name("fedcare")
HEAVY = ("tensorflow", "torch", "opacus", "keras", "flwr.simulation", "ray")
BOX = re.compile(r"[│╭╮╰╯─]")  # click's rich error panel


def _run(*args: str, home: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run `fedcare ARGS` and return it (its import report taken out of stderr) with the heavy
    modules it imported. A refusal or help answers before anything heavy loads: that, not a
    wall time on a shared machine, is what makes it answer within about a second.
    """
    env = {**os.environ, "FEDCARE_HOME": str(home), "COLUMNS": "200",
           "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run([str(FEDCARE), *args], capture_output=True, text=True, env=env,
                          timeout=60, cwd=home)
    imports = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    modules = {line.rsplit("|", 1)[-1].strip() for line in imports}
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    stderr = "\n".join(line for line in proc.stderr.splitlines()
                       if not line.startswith("import time:"))
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, stderr), heavy


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["simulate", "--rounds", "0"], ["--rounds must be >= 1, got 0"]),
        (["simulate", "--epsilon", "-1"], ["--epsilon must be > 0, got -1.0"]),
        (["simulate", "--delta", "1"], ["--delta must be in (0, 1)"]),
        (["simulate", "--dp", "foo"],
         ["'--dp'", "'foo' is not one of 'patient', 'hospital', 'none'"]),
        (["simulate", "--aggregator", "mode"], ["'--aggregator'", "'median'", "'trimmed-mean'"]),
        (["simulate", "--task", "mnist"],
         ["'--task'", "'heart-disease', 'breast-cancer', 'diabetes', 'digits'"]),
        (["simulate", "--task", "csv"], ["'--task'", "fedcare deploy-local --task csv"]),
        (["simulate", "--hospitals", "9"],
         ["--hospitals must be between 1 and 4 for task 'heart-disease', got 9"]),
        (["simulate", "--task", "digits", "--hospitals", "500"],
         ["--hospitals must be between 1 and 179 for task 'digits'"]),
        (["simulate", "--min-hospitals", "7"], ["--min-hospitals must be between 1 and"]),
        (["simulate", "--partition", "dirichlet"],
         ["--partition 'dirichlet' does not apply to task 'heart-disease'", "real ones"]),
        (["simulate", "--alpha", "0.1"],
         ["--alpha does not apply to task 'heart-disease'", "breast-cancer, diabetes, digits"]),
        (["simulate", "--task", "digits", "--alpha", "0.1"],
         ["--alpha applies to a Dirichlet split only", "--partition dirichlet"]),
        (["simulate", "--secagg-threshold", "3"],
         ["--secagg-threshold applies only with secure aggregation"]),
        (["simulate", "--trim-fraction", "0.2"],
         ["--trim-fraction applies only with aggregator 'trimmed-mean'"]),
        (["simulate", "--noise-mode", "distributed"],
         ["--noise-mode 'distributed'", "--dp hospital --secure-aggregation"]),
        (["simulate", "--secure-aggregation", "--hospitals", "2"],
         ["--hospitals: secure aggregation needs at least 3 participants"]),
        (["simulate", "--aggregator", "median", "--secure-aggregation"],
         ["--aggregator 'median' needs every update in the clear"]),
        (["baseline", "--rounds", "0"], ["--rounds must be >= 1, got 0"]),
        (["baseline", "--seeds", "0"], ["--seeds must be >= 1, got 0"]),
        (["baseline", "--task", "breast-cancer", "--hospitals", "99"],
         ["--hospitals must be between 1 and 56 for task 'breast-cancer'"]),
        (["deploy-local", "--out", "dl", "--rounds", "0"], ["'--rounds'", "x>=1"]),
        (["deploy-local", "--out", "dl", "--epsilon", "-1"], ["'--epsilon'", "x>0"]),
        (["deploy-local", "--out", "dl", "--dp", "foo"], ["'--dp'", "'patient', 'hospital'"]),
        (["deploy-local", "--out", "dl", "--hospitals", "9"],
         ["--hospitals must be between 1 and 4 for task 'heart-disease', got 9"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0] in (
        "simulate", "baseline", "deploy-local") else "",
)
def test_bad_option_is_named_by_its_flag_with_exit_2_before_heavy_imports(args, expected, tmp_path):
    proc, heavy = _run(*args, home=tmp_path)
    said = " ".join(BOX.sub(" ", proc.stderr + proc.stdout).split())
    assert proc.returncode == 2, said
    for text in expected:
        assert text in said
    assert "Traceback" not in said
    assert "num-server-rounds" not in said and "dp.epsilon" not in said  # the flag, not the key
    assert heavy == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run directory, no state


def test_a_bad_value_in_a_config_file_names_the_file_and_key(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('num-server-rounds = 5\n[dp]\nepsilon = -2.0\n')
    proc, heavy = _run("simulate", "--config", str(config), home=tmp_path)
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 2
    assert f"{config}: dp.epsilon must be > 0, got -2.0" in said
    assert heavy == []


def test_help_lists_choices_in_panels_quickly(tmp_path):
    proc, heavy = _run("simulate", "--help", home=tmp_path)
    assert proc.returncode == 0
    for panel in ("Task", "Federation", "Privacy", "Secure aggregation", "Reliability",
                  "Output"):
        assert re.search(rf"╭─ {panel} ─", proc.stdout), panel
    for choices in ("[patient|hospital|none]", "[iid|dirichlet]", "[fedavg|fedadam|fedyogi]",
                    "heart-disease, breast-cancer, diabetes, digits"):
        assert choices in proc.stdout
    assert heavy == []


def test_resume_names_a_conflicting_setting_by_the_flag_typed(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"run_config": {
        **RunConfig.from_run_config({"num-server-rounds": 4, "seed": 3}).to_run_config()}}))
    done = subprocess.run([str(FEDCARE), "simulate", "--resume", str(run_dir), "--seed", "5"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--seed 5 (the run has 3)" in " ".join(done.stderr.split())
