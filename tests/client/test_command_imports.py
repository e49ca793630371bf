"""Hospital commands answer at once: none imports TensorFlow, torch, Opacus, Keras or Ray.

Each command runs through the real ``fedcare`` root (``simulations.cli.main``) in a fresh
interpreter, which then reports the modules it imported. The heavy frameworks load only in
commands that compute with them (``predict`` itself, ``budget --recompute``), and the control
below shows that the probe does see them when they are imported.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client.roster_cli import create_signing_key, make_roster, write_roster
from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger
from common.tasks.csv_task import write_example_hospitals
from common.wire.modes import AccountantName
from server.certificates import create_consortium

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "torch", "opacus", "keras", "flwr.simulation", "ray")
PROBE = """
import json, sys
from simulations.cli.main import app
try:  # without standalone mode, click returns a typer.Exit's code instead of exiting
    returned = app(sys.argv[1:], prog_name="fedcare", standalone_mode=False)
    code = returned if isinstance(returned, int) else 0
except SystemExit as exit:
    code = exit.code or 0
heavy = sorted(name for name in sys.modules
               if any(name == h or name.startswith(h + ".") for h in HEAVY))
print("\\n@@" + json.dumps({"code": code, "heavy": heavy}))
""".replace("HEAVY", repr(HEAVY))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A charged ledger, a data file and its schema, a roster and a certificate."""
    directory = tmp_path_factory.mktemp("commands")
    ledger = directory / "ledgers" / "va.json"
    opened = PrivacyLedger.create(ledger, hospital="va", budget_epsilon=8.0, budget_delta=1e-5,
                                  head_path=directory / "heads" / "va.head")
    for server_round in (1, 2, 3):
        opened.charge("run", server_round, GaussianRoundEvent(1.5, 0.06, 17, "patient"))
    prv = PrivacyLedger.create(directory / "ledgers" / "hungary.json", hospital="hungary",
                               budget_epsilon=8.0, budget_delta=1e-5, accountant=AccountantName.PRV,
                               head_path=directory / "heads" / "hungary.head")
    prv.charge("run", 1, GaussianRoundEvent(1.5, 0.06, 17, "patient"))
    schema, data = write_example_hospitals(directory / "data", 1)
    keys = [create_signing_key(directory / "keys" / f"{name}.key") for name in "abc"]
    roster = directory / "roster.json"
    write_roster(make_roster([f"{name}={key.public_key}" for name, key in zip("abc", keys,
                                                                              strict=True)],
                             colluding=0, min_threshold=2, honest=None), roster)
    certificate = create_consortium(directory / "certs", ["127.0.0.1"]).server_crt
    return {"ledger": ledger, "prv_ledger": prv.path, "schema": schema, "data": data[0],
            "roster": roster, "certificate": certificate,
            "new_ledger": directory / "new" / "cleveland.json",
            "home": directory / "fedcare-home", "page": directory / "report.html"}


def run_command(*args: object, home: Path) -> dict:
    """Run ``fedcare ARGS`` in a fresh interpreter: its exit code and heavy modules imported."""
    env = {**os.environ, "FEDCARE_HOME": str(home), "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert "@@" in done.stdout, f"probe failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.rsplit("@@", 1)[1])


COMMANDS = {
    "budget": lambda i: ["budget", i["ledger"]],
    "budget init": lambda i: ["budget", "init", i["new_ledger"]],
    "budget report": lambda i: ["budget", "report", i["ledger"], "--html", i["page"]],
    "validate-data": lambda i: ["validate-data", "--schema", i["schema"], i["data"]],
    "predict --help": lambda i: ["predict", "--help"],
    "roster show": lambda i: ["roster", "show", i["roster"]],
    "certs show": lambda i: ["certs", "show", i["certificate"]],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_hospital_command_imports_no_heavy_framework(inputs, command):
    result = run_command(*COMMANDS[command](inputs), home=inputs["home"])

    assert result["code"] == 0
    assert result["heavy"] == []


def test_budget_recompute_loads_opacus_the_probe_sees_it(inputs):
    # PRV: Opacus's accountant class, with torch (RDP runs Opacus's analysis file without it).
    result = run_command("budget", inputs["prv_ledger"], "--recompute", home=inputs["home"])

    assert result["code"] == 0
    assert "opacus" in result["heavy"] and "torch" in result["heavy"]
