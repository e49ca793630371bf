"""What every hospital got, in a simulation's run directory (exact, simulation-only), and the
consortium report's first lines (only what may leave): a real ``fedcare simulate`` on the
in-process engine, two rounds.
"""

import csv
import json
from dataclasses import dataclass, replace

import pytest
from typer.testing import CliRunner

from client.app import build_client_app
from client.privacy import HospitalPrivacy
from common.config import RunConfig
from common.tasks import HospitalData
from common.wire.modes import DpMode
from simulations.cli.main import app
from simulations.engine.app_recipe import RecipeClientApp
from simulations.engine.hospitals_exact import LABEL, SECTION, TABLE
from simulations.engine.in_process_engine import Engine
from simulations.engine.simulate import (
    SimulatedHospitalPrivacy,
    simulate,
    with_ephemeral_roster,
)

HOSPITALS = ("cleveland", "hungary", "switzerland", "va")
MODELS = ("global", "personal", "local_only", "majority")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """``fedcare simulate`` of heart-disease, 2 rounds, patient-level DP, in this process."""
    out = tmp_path_factory.mktemp("sim") / "run"
    done = CliRunner().invoke(app, ["simulate", "--rounds", "2", "--engine", "in-process",
                                    "--out", str(out)])
    assert done.exit_code == 0, done.output
    return out


def test_simulate_writes_every_hospitals_exact_table_labelled_simulation_only(run_dir):
    with open(run_dir / TABLE, newline="") as handle:
        rows = list(csv.DictReader(handle))

    assert [(r["hospital"], r["model"]) for r in rows] == [
        (h, m) for h in HOSPITALS for m in MODELS]
    assert {r["figures"] for r in rows} == {LABEL} == {"exact, simulation only"}
    run_id = json.loads((run_dir / "config.json").read_text())["run_id"]
    assert {r["run"] for r in rows} == {run_id} and {r["round"] for r in rows} == {"2"}
    for row in rows:  # the hospital's own file says the same
        with open(run_dir / "ledgers" / f"{row['hospital']}.report.csv", newline="") as handle:
            own = next(r for r in csv.DictReader(handle) if r["model"] == row["model"])
        assert own["accuracy"] == row["accuracy"] and own["auc"] == row["auc"]
    report = (run_dir / "report.md").read_text()
    assert report.count(SECTION) == 1 and "| va | 45 | personal |" in report


def test_the_run_directory_keeps_its_contract(run_dir):
    # Every *.json in ledgers/ is still a ledger (the hospitals' new files are not JSON).
    for path in (run_dir / "ledgers").glob("*.json"):
        assert "entries" in json.loads(path.read_text()), path.name
    for hospital in HOSPITALS:
        for suffix in ("personal.keras", "global.keras", "report.md", "report.png"):
            assert (run_dir / "ledgers" / f"{hospital}.{suffix}").is_file()


def test_the_report_opens_with_what_may_leave(run_dir):
    report = (run_dir / "report.md").read_text()
    head = report[:report.index("## Final round")]

    assert "**Headline** (DP estimate" in head
    assert "client average" in head and "worst hospital" in head
    assert "(its own DP release, noise included)" in head
    assert "- Declined every round: none." in head
    assert "personal" not in head  # nothing computed from a personal model


@dataclass(frozen=True)
class OneHospitalWithoutDp:
    """Simulated hospitals, but ``va`` applies dp none: it declines every DP round."""

    inner: SimulatedHospitalPrivacy

    def __call__(self, context: object, hospital: HospitalData) -> HospitalPrivacy:
        privacy = self.inner(context, hospital)
        return replace(privacy, mode=DpMode.NONE) if hospital.name == "va" else privacy


def test_the_report_names_a_hospital_that_declined_every_round(tmp_path):
    # The run's ephemeral roster first: the hospitals sign their replies with its keys.
    config = with_ephemeral_roster(RunConfig.from_run_config({"num-server-rounds": 2}), tmp_path)
    privacy = OneHospitalWithoutDp(SimulatedHospitalPrivacy(config, tmp_path / "ledgers"))

    simulate(config, tmp_path, client_app=RecipeClientApp(build_client_app, privacy),
             engine=Engine.IN_PROCESS)

    report = (tmp_path / "report.md").read_text()
    assert "- Declined every round: va." in report[:report.index("## Final round")]
