"""The audit building blocks stay free of Flower and of the ML frameworks."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_audit_modules_import_no_flower_tensorflow_or_torch():
    code = (
        "import sys\n"
        "import simulations.audit.lower_bound, simulations.audit.canaries\n"
        "import simulations.audit.membership, simulations.audit.plots\n"
        "heavy = ('flwr', 'tensorflow', 'keras', 'torch', 'opacus')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.stdout.strip() == "[]"
