import hashlib
import json
from importlib import resources

import numpy as np
import pytest

from common.tasks.heart_disease import (
    HOSPITALS,
    TASK,
    feature_names,
    load_frame,
    load_hospitals,
    public_scaling,
    split_hospital,
)

# FLamby's published counts after dropping incomplete rows, and its train/test sizes.
ROWS = {"cleveland": 303, "hungary": 261, "switzerland": 46, "va": 130}
SPLITS = {"cleveland": (199, 104), "hungary": (172, 89), "switzerland": (30, 16), "va": (85, 45)}
UCI_MD5 = {  # MD5SUMS published with the UCI files
    "cleveland": "2d91a8ff69cfd9616aa47b59d6f843db",
    "hungary": "22e96bee155b5973568101c93b3705f6",
    "switzerland": "9a87f7577310b3917730d06ba9349e20",
    "va": "4249d03ca7711e84f4444768c9426170",
}


def test_vendored_files_reproduce_uci_bytes():
    path = resources.files("common.tasks").joinpath("data/heart_disease.json")
    data = json.loads(path.read_text())
    for name, expected in UCI_MD5.items():
        raw = ("\n".join(data["hospitals"][name]["lines"]) + "\n").encode("ascii")
        assert hashlib.md5(raw).hexdigest() == expected


def test_heart_disease_row_counts_match_flamby():
    counts = {name: len(load_frame(name)) for name in HOSPITALS}
    assert counts == ROWS
    assert sum(counts.values()) == 740


def test_heart_disease_split_counts_and_features():
    hospitals = load_hospitals(4)
    assert [h.name for h in hospitals] == list(HOSPITALS)
    for hospital in hospitals:
        assert (hospital.num_train, hospital.num_test) == SPLITS[hospital.name]
        # FLamby's 13 features, then the indicators of a missing trestbps and chol.
        assert hospital.x_train.shape[1] == hospital.x_test.shape[1] == TASK.num_features == 15
        assert set(np.unique(hospital.y_train)) <= {0.0, 1.0}


def test_heart_disease_switzerland_train_is_all_positive():
    swiss = load_hospitals(3)[2]
    assert swiss.y_train.min() == 1.0 and swiss.y_test.min() == 0.0


def test_heart_disease_zscored_with_own_training_statistics_as_a_setting():
    for hospital in load_hospitals(4, normalisation="per-hospital"):
        mean, std = hospital.x_train.mean(axis=0), hospital.x_train.std(axis=0)
        varying = std > 0
        np.testing.assert_allclose(mean, 0.0, atol=1e-5)
        np.testing.assert_allclose(std[varying], 1.0, atol=1e-4)
        assert np.all(np.isfinite(hospital.x_test))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_heart_disease_first_n_hospitals(n):
    assert [h.name for h in load_hospitals(n)] == list(HOSPITALS[:n])


def test_heart_disease_shares_public_constants_by_default():
    scaling = public_scaling()
    for hospital in load_hospitals(4):
        x_train, x_test, _, _ = split_hospital(load_frame(hospital.name))
        age = feature_names().index("age")
        # Every hospital scales by the same constants: its own mean shift survives.
        np.testing.assert_allclose(hospital.x_train[:, age],
                                   (x_train[:, age] - scaling.center[age]) / scaling.scale[age],
                                   rtol=1e-6)
        assert np.all(np.isfinite(hospital.x_test))


@pytest.mark.parametrize("indicator", [True, False])
def test_a_missing_cholesterol_is_indicated_instead_of_a_magic_zero(indicator):
    swiss = load_hospitals(3, missing_indicator=indicator)[2]  # no cholesterol measured
    chol, missing = feature_names().index("chol"), feature_names().index("chol_missing")
    if indicator:
        assert np.all(swiss.x_train[:, missing] == 1) and np.all(swiss.x_train[:, chol] == 0)
    else:  # 0 mg/dl passes through the scaling as if it were measured
        assert np.all(swiss.x_train[:, missing] == 0) and np.all(swiss.x_train[:, chol] < -4)


def test_the_split_digest_does_not_depend_on_the_normalisation():
    digests = {tuple(h.split_digest for h in load_hospitals(4, normalisation=n,
                                                           missing_indicator=i))
               for n in ("public", "per-hospital") for i in (True, False)}
    assert len(digests) == 1 and len(set(next(iter(digests)))) == 4
