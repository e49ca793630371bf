"""The personal model: trained at the hospital on its training rows, kept beside its ledger,
never in a reply; ``fedcare predict --model personal`` uses it; the hospital's own report.

Real Flower Messages into the real ClientApp (the final evaluate message of a run), real
trainers, real Keras files.
"""

import csv
from dataclasses import fields

import keras
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import client.evaluation_round as evaluation_round
from client.app import build_client_app
from client.hospital import load_hospital
from client.hospital_report import (
    MODELS,
    FinalModel,
    majority_outputs,
    personalise_and_report,
    report_path,
)
from client.personalisation import (
    TrainingPlan,
    fine_tune,
    fit_intercept,
    global_model_path,
    personal_model_path,
    train_local_only,
    validation_split,
)
from client.prediction import encode_new_patients
from client.training import get_trainer
from common.config import RunConfig
from common.models import build_model
from common.schema import DataSchema
from common.tasks import get_task
from common.tasks.csv_task import csv_task_spec, load_csv_hospital, write_example_hospitals
from common.wire.modes import DpMode, NoiseMode
from common.wire.replies import EvaluateReply
from common.wire.statement import reply_parts
from server.federation import round_settings
from simulations.cli.main import app as fedcare_cli
from simulations.engine.simulate import SimulatedHospitalPrivacy
from tests.wire_messages import context_for, reply_from, request_message

TASK = get_task("heart-disease")
ROUNDS = 3
NODE = {"partition-id": 3, "num-partitions": 4}  # va: positive rate 0.78


def _hospital(index=3):
    return load_hospital("heart-disease", 4, index, seed=0, partition="iid", alpha=0.5)


def _global_weights():
    return [np.asarray(w) for w in build_model(TASK, seed=0).get_weights()]


def test_the_validation_split_partitions_training_rows_stratified_and_reproducibly():
    y = np.array([0] * 30 + [1] * 10, dtype=np.float32)

    fit, validation = validation_split(y, seed=4)

    assert sorted([*fit, *validation]) == list(range(40))
    assert len(validation) == 10 and y[validation].sum() == 2.0  # 25% of each class
    again = validation_split(y, seed=4)
    assert np.array_equal(again[1], validation)


def test_the_personal_intercept_moves_the_base_rate_and_nothing_else():
    hospital, trainer = _hospital(), get_trainer(TASK)
    weights = _global_weights()

    shifted = fit_intercept(trainer, weights, hospital.x_train, hospital.y_train)

    assert all(np.array_equal(a, b) for a, b in zip(shifted[:-1], weights[:-1], strict=True))
    before = trainer.predict(weights, hospital.x_train).mean()
    after = trainer.predict(shifted, hospital.x_train).mean()
    rate = hospital.y_train.mean()
    assert abs(after - rate) < abs(before - rate) and abs(after - rate) < 0.05


def test_personal_and_local_models_never_look_at_test_rows():
    hospital, trainer = _hospital(), get_trainer(TASK)
    plan = TrainingPlan(learning_rate=0.1, batch_size=12, seed=3)
    scrambled = type(hospital)(hospital.name, hospital.x_train, hospital.y_train,
                               np.full_like(hospital.x_test, np.nan),
                               1 - hospital.y_test, hospital.split_digest)

    for train in (lambda h: fine_tune(trainer, _global_weights(), h, plan, max_epochs=5),
                  lambda h: train_local_only(trainer, h, plan, max_epochs=5)):
        one, other = train(hospital), train(scrambled)
        assert one.epochs == other.epochs
        assert all(np.array_equal(a, b) for a, b in zip(one.weights, other.weights, strict=True))


def test_the_hospital_report_scores_four_predictors_on_its_test_rows(tmp_path):
    hospital, trainer = _hospital(), get_trainer(TASK)
    ledger = tmp_path / "va.json"
    final = FinalModel("run-1", ROUNDS, _global_weights())
    plan = TrainingPlan(learning_rate=0.1, batch_size=12, seed=3)

    rows = personalise_and_report(trainer, hospital, final, plan, ledger)

    assert [r["model"] for r in rows] == list(MODELS)
    majority = next(r for r in rows if r["model"] == "majority")
    assert majority["accuracy"] == pytest.approx(float(np.mean(hospital.y_test == 1)))
    assert majority["balanced_accuracy"] == 0.5 and majority["auc"] == 0.5
    with open(report_path(ledger, "csv"), newline="") as handle:
        assert [r["model"] for r in csv.DictReader(handle)] == list(MODELS)
    assert report_path(ledger, "png").stat().st_size > 0
    text = report_path(ledger, "md").read_text()
    assert "Gain of joining" in text and "without differential privacy" in text
    personal = keras.saving.load_model(personal_model_path(ledger))
    outputs = personal.predict(hospital.x_test, verbose=0)
    personal_row = next(r for r in rows if r["model"] == "personal")
    assert np.mean((outputs[:, 0] >= 0.5) == (hospital.y_test == 1)) == pytest.approx(
        personal_row["accuracy"])
    # The same run's final model again: nothing is trained twice.
    assert personalise_and_report(trainer, hospital, final, plan, ledger) == []


def test_a_majority_predictor_predicts_the_training_rows_majority():
    outputs = majority_outputs("binary", np.array([1, 1, 0]), 4, 1)
    assert outputs.shape == (4, 1) and np.all(outputs == 1.0)


CONFIG = RunConfig.from_run_config({"local-steps": 2, "num-server-rounds": ROUNDS})


def _final_evaluate(app):
    """The run's final evaluate message, as the server sends it, into `app`."""
    message = request_message(round_settings(CONFIG, "run-1", ROUNDS), _global_weights(),
                              "evaluate")
    return app(message=message, context=context_for(NODE, CONFIG.to_run_config()))


def test_no_reply_carries_the_personal_model_or_anything_computed_from_it(tmp_path,
                                                                          monkeypatch):
    # Arrange: two hospitals alike (seeded noise), one with its personal model trained
    with_model = build_client_app(SimulatedHospitalPrivacy(CONFIG, tmp_path / "a"))
    without = build_client_app(SimulatedHospitalPrivacy(CONFIG, tmp_path / "b"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    # Act
    reply_a = _final_evaluate(with_model)
    monkeypatch.setattr(evaluation_round, "personalise", lambda request: None)
    reply_b = _final_evaluate(without)

    # Assert: the personal model exists at one hospital only, and the replies are identical
    assert personal_model_path(tmp_path / "a" / "va.json").is_file()
    assert global_model_path(tmp_path / "a" / "va.json").is_file()
    assert not personal_model_path(tmp_path / "b" / "va.json").exists()
    unpacked_a, unpacked_b = reply_from(reply_a, private=True), reply_from(reply_b, private=True)
    assert isinstance(unpacked_a, EvaluateReply)
    assert unpacked_a.statistics.keys() == unpacked_b.statistics.keys()
    for key, value in unpacked_a.statistics.items():
        assert np.array_equal(value, unpacked_b.statistics[key])
    assert unpacked_a.privacy == unpacked_b.privacy
    assert set(reply_a.content.keys()) == set(reply_b.content.keys())
    # Every part of the reply is one the manifest allows (the statement lists each).
    sent = {f.name for f in fields(unpacked_a) if getattr(unpacked_a, f.name) is not None}
    assert sent <= set(reply_parts(DpMode.PATIENT, NoiseMode.LOCAL, False))


def _csv_hospital(directory):
    schema_path, paths = write_example_hospitals(directory, 1)
    schema = DataSchema.load(schema_path)
    loaded = load_csv_hospital(paths[0], schema, name="hospital-0")
    loaded.preprocessing.save(directory / "hospital-0.preprocessing.json")
    return paths[0], schema, loaded


def test_predict_uses_the_personal_model_when_asked_and_the_global_by_default(tmp_path):
    data_path, schema, loaded = _csv_hospital(tmp_path)
    task = csv_task_spec(schema)
    trainer = get_trainer(task)
    ledger = tmp_path / "hospital-0.json"
    weights = [np.asarray(w) for w in build_model(task, seed=2).get_weights()]
    personalise_and_report(trainer, loaded.data, FinalModel("run-1", 5, weights),
                           TrainingPlan(0.1, 12, 1), ledger)
    new = tmp_path / "new.csv"
    pd.read_csv(data_path).head(20).to_csv(new, index=False)
    runner = CliRunner()

    def predict(*model):
        out = tmp_path / f"predictions-{'-'.join(model) or 'default'}.csv"
        done = runner.invoke(fedcare_cli, ["predict", *model, "--data", str(new),
                                           "--preprocessing",
                                           str(tmp_path / "hospital-0.preprocessing.json"),
                                           "--out", str(out)])
        assert done.exit_code == 0, done.output
        return pd.read_csv(out).filter(like="probability_").to_numpy()[:, 0]

    patients, problems = encode_new_patients(new, loaded.preprocessing)
    assert patients is not None, problems
    x = patients.x
    personal = keras.saving.load_model(personal_model_path(ledger)).predict(x, verbose=0)
    assert np.allclose(predict("--model", "personal"), personal[:, 0], atol=1e-6)
    assert np.allclose(predict(), trainer.predict(weights, x)[:, 0], atol=1e-6)
    assert not np.allclose(predict("--model", "personal"), predict("--model", "global"))

    personal_model_path(ledger).unlink()  # deleted: a clear message, naming the file
    gone = runner.invoke(fedcare_cli, ["predict", "--model", "personal", "--data", str(new),
                                       "--preprocessing",
                                       str(tmp_path / "hospital-0.preprocessing.json")])
    assert gone.exit_code == 2 and "hospital-0.personal.keras does not exist" in gone.output
