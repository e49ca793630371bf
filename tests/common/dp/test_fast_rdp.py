"""The vectorized RDP curve and the calibration search built on it, against Opacus itself.

References are Opacus's own functions (``compute_rdp``, ``get_privacy_spent``,
``get_noise_multiplier``, ``RDPAccountant``), imported here the ordinary way.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.accountants.utils import get_noise_multiplier

import common.dp.fast_rdp as fast_rdp
from common.dp.accounting import calibrate_noise_multiplier
from common.dp.fast_rdp import DEFAULT_ORDERS, epsilon_of, rdp_curve

# Opacus, the reference here, warns when the optimal order is its largest (settings at the
# edge of the compared range); fedcare's curve uses the same orders and must agree anyway.
pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")

ROOT = Path(__file__).resolve().parents[3]


def test_default_orders_are_rdp_accountants_alphas():
    assert tuple(RDPAccountant.DEFAULT_ALPHAS) == DEFAULT_ORDERS


@pytest.mark.parametrize("q", [0.001, 0.06, 0.4, 0.99, 1.0])
@pytest.mark.parametrize("sigma", [0.7, 1.6, 5.0, 40.0])
def test_rdp_curve_gives_opacus_epsilon(q, sigma):
    # Arrange
    reference = np.asarray(compute_rdp(q=q, noise_multiplier=sigma, steps=17,
                                       orders=list(DEFAULT_ORDERS)))

    # Act
    curve = rdp_curve(q=q, noise_multiplier=sigma, steps=17)

    # Assert: the epsilon a search compares agrees far inside its decision margin (1e-7)
    expected = get_privacy_spent(orders=list(DEFAULT_ORDERS), rdp=reference, delta=1e-5)[0]
    assert epsilon_of(curve, delta=1e-5) == pytest.approx(expected, rel=1e-10)
    large = reference > 1e-3  # where the curve decides epsilon
    np.testing.assert_allclose(curve[large], reference[large], rtol=1e-9)


CASES = [  # (target epsilon, sample rate, steps): the default run's four hospitals, and others
    (1.0, 0.0603, 17), (1.0, 0.0698, 15), (1.0, 0.1412, 8), (1.0, 0.4, 3),
    (1.0, 1.0, 20), (8.0, 0.04, 2250), (0.5, 0.004, 1000), (20.0, 0.9, 1),
]


@pytest.mark.parametrize(("epsilon", "q", "steps"), CASES)
def test_calibration_equals_opacus_get_noise_multiplier(epsilon, q, steps):
    expected = get_noise_multiplier(target_epsilon=epsilon, target_delta=1e-5, sample_rate=q,
                                    steps=steps)

    z = calibrate_noise_multiplier(target_epsilon=epsilon, target_delta=1e-5, sample_rate=q,
                                   steps=steps)

    assert z == expected


def test_calibration_asks_opacus_where_the_fast_curve_cannot_decide(monkeypatch):
    # Every fast evaluation fails (nan): each step of the search is Opacus's own epsilon.
    monkeypatch.setattr(fast_rdp, "rdp_curve", lambda **_: np.full(len(DEFAULT_ORDERS), np.nan))
    expected = get_noise_multiplier(target_epsilon=2.0, target_delta=1e-5, sample_rate=0.05,
                                    steps=50)

    z = calibrate_noise_multiplier(target_epsilon=2.0, target_delta=1e-5, sample_rate=0.05,
                                   steps=50)

    assert z == expected


def test_a_budget_too_low_for_any_noise_is_refused_as_opacus_refuses_it():
    with pytest.raises(ValueError, match="budget is too low"):
        get_noise_multiplier(target_epsilon=1e-9, target_delta=1e-5, sample_rate=1.0, steps=1)
    with pytest.raises(ValueError, match=r"target_epsilon=1e-09 .* budget is too low"):
        calibrate_noise_multiplier(target_epsilon=1e-9, target_delta=1e-5, sample_rate=1.0,
                                   steps=1)


PROBE = """
import json, sys
from common.dp.accounting import _rdp_analysis, calibrate_noise_multiplier, epsilon_from_history
epsilon = epsilon_from_history([(1.1, 0.05, 40), (0.8, 1.0, 1)], delta=1e-5)
z = calibrate_noise_multiplier(target_epsilon=1.0, target_delta=1e-5, sample_rate=0.4, steps=3)
print(json.dumps({"epsilon": epsilon, "z": z, "file": _rdp_analysis().__file__,
                  "torch": "torch" in sys.modules,
                  "opacus": sorted(m for m in sys.modules if m.split(".")[0] == "opacus")}))
"""


def test_rdp_accounting_runs_opacus_analysis_without_importing_torch():
    # Act: a fresh interpreter accounts and calibrates
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    # Assert: Opacus's own analysis file, its figures, and neither torch nor Opacus's package
    import opacus.accountants.analysis.rdp as opacus_rdp

    reference = RDPAccountant()
    reference.history = [(1.1, 0.05, 40), (0.8, 1.0, 1)]
    assert Path(seen["file"]) == Path(opacus_rdp.__file__)
    assert seen["epsilon"] == reference.get_epsilon(1e-5)
    assert seen["z"] == get_noise_multiplier(target_epsilon=1.0, target_delta=1e-5,
                                             sample_rate=0.4, steps=3)
    assert seen["torch"] is False and seen["opacus"] == []
