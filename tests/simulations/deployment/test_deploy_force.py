"""deploy-local's --out as simulate's: a used one is exit 2 without --force; with --force its
certificates, keys, roster and ledgers are kept and the previous run/ is set aside, never
deleted. After an interruption the message names a run directory only when one was written.
"""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulations.cli.deploy_command import _what_was_kept
from simulations.cli.main import app
from simulations.deployment.deploy_local import (
    DeployLayout,
    DeploymentError,
    DeploySettings,
    check_out_dir,
    prepare_credentials,
    prepare_roster,
    set_aside_previous_run,
)


def test_a_used_out_without_force_is_exit_2_before_anything_starts(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "ledgers").mkdir()

    done = CliRunner().invoke(app, ["deploy-local", "--out", str(out)])

    assert done.exit_code == 2
    assert (f"--out {out.resolve()} exists and is not empty; choose another directory or pass "
            "--force") in " ".join(done.output.split())
    assert sorted(p.name for p in out.iterdir()) == ["ledgers"]  # nothing made


def test_check_out_dir_takes_a_used_out_with_force_only(tmp_path: Path) -> None:
    app_dir, out = tmp_path / "app", tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(DeploymentError, match="or pass --force"):
        check_out_dir(out, app_dir)
    check_out_dir(out, app_dir, force=True)


def test_force_keeps_the_signing_keys_and_rebuilds_the_same_roster(tmp_path: Path) -> None:
    layout = DeployLayout(tmp_path / "out")
    names = ["a", "b", "c"]
    first = prepare_roster(layout, names, threshold=2)
    keys = {name: layout.signing_key(name).read_bytes() for name in names}

    again = prepare_roster(layout, names, threshold=2, reuse=True)

    assert again.sha256 == first.sha256  # the same keys, so the same roster
    assert {name: layout.signing_key(name).read_bytes() for name in names} == keys


def test_force_keeps_the_certificates(tmp_path: Path) -> None:
    layout = DeployLayout(tmp_path / "out")
    settings = DeploySettings(hospitals=2, task="heart-disease", rounds=1, out=layout.out,
                              app_dir=tmp_path, force=True)
    made = prepare_credentials(settings, layout, ["cleveland", "hungary"])
    files = {p: p.read_bytes() for p in layout.certs.iterdir()}

    kept = prepare_credentials(settings, layout, ["cleveland", "hungary"])

    assert {p: p.read_bytes() for p in layout.certs.iterdir()} == files
    assert kept.ca_crt is not None and kept.ca_crt.read_bytes() == made.ca_crt.read_bytes()
    assert kept.hospital_keys.keys() == made.hospital_keys.keys()


def test_force_sets_the_previous_run_aside(tmp_path: Path) -> None:
    layout = DeployLayout(tmp_path / "out")
    layout.run_dir.mkdir(parents=True)
    (layout.run_dir / "metrics.csv").write_text("round\n1\n")
    (layout.app / "client").mkdir(parents=True)  # the previous snapshot of the code
    said: list[str] = []

    set_aside_previous_run(layout, said.append)

    [kept] = [p for p in layout.out.iterdir() if p.name.startswith("previous-")]
    assert (kept / "run" / "metrics.csv").read_text() == "round\n1\n"
    assert (kept / "app" / "client").is_dir()
    assert not layout.run_dir.exists() and not layout.app.exists()
    assert said == [f"--force: the previous run's run, app are kept in {kept}"]


def test_after_an_interruption_a_missing_run_directory_is_not_named(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()

    assert _what_was_kept(out) == "No round was completed, so there is no run to resume."

    (out / "run").mkdir()
    (out / "run" / "metrics.csv").write_text("round,seconds\n1,2.0\n2,1.5\n")
    (out / "logs").mkdir()
    assert _what_was_kept(out) == (
        f"The run directory {out / 'run'} keeps the 2 round(s) completed (metrics.csv, "
        f"checkpoints). Logs: {out / 'logs'}")
