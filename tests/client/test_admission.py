import json
import logging
from dataclasses import replace

import numpy as np
import pytest

from client.admission import Admitted, Refused, admit
from client.app import build_client_app
from common.config import RunConfig
from common.models import build_model
from common.schema import DataSchema
from common.tasks import task_for_config
from common.tasks.csv_task import EXAMPLE_SCHEMA, csv_task_spec, write_example_hospitals
from common.version import fedcare_version
from common.wire.records import pack_request
from common.wire.replies import DeclinedReply, TrainReply
from tests.wire_messages import context_for, reply_from, request_message


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hospitals")
    schema_path, paths = write_example_hospitals(directory, 2)
    return schema_path, DataSchema.load(schema_path).sha256, paths


def _settings(task="csv", version=None, hospitals=2):
    from server.federation import round_settings

    config = RunConfig.from_run_config({"hospitals": hospitals, "dp.mode": "none"})
    settings = round_settings(config, "run-1", 1)
    if task == "csv":  # the example schema's shared normalisation, as the server states it
        digest = csv_task_spec(DataSchema.from_dict(EXAMPLE_SCHEMA)).scaling().digest
        settings = replace(settings, normalisation_digest=digest)
    return replace(settings, task=task,
                   fedcare_version=fedcare_version() if version is None else version)


def _node(example, index=1, **extra):
    schema_path, _, paths = example
    return {"partition-id": index, "num-partitions": 2, "data-path": str(paths[index]),
            "schema-path": str(schema_path), **extra}


def test_hospital_with_matching_schema_and_good_data_is_admitted(example):
    # Arrange
    _, sha256, _ = example

    # Act
    node = _node(example, **{"hospital-name": "st-anne"})
    admission = admit(settings=_settings(), node_config=node,
                      run_config={"csv.schema-sha256": sha256})

    # Assert
    assert isinstance(admission, Admitted)
    assert (admission.index, admission.name, admission.data.name) == (1, "hospital-1", "st-anne")
    assert admission.task.num_features == 20 and admission.data.num_train == 199
    assert len(admission.data_sha256) == 64
    assert admission.csv is not None and admission.node.hospital_name == "st-anne"


def test_other_fedcare_version_is_refused_naming_both(example):
    _, sha256, _ = example
    admission = admit(settings=_settings(version="0.0.1"), node_config=_node(example),
                      run_config={"csv.schema-sha256": sha256})
    assert isinstance(admission, Refused) and admission.name == "hospital-1"
    assert f"server runs fedcare 0.0.1 but this hospital runs fedcare {fedcare_version()}" \
        in admission.reason


def test_server_without_a_version_is_refused(example, run):
    config, settings, weights = run
    content = pack_request(settings, weights)
    del content["config"]["fedcare-version"]
    reply = build_client_app()(message=request_message(None, None, content=content),
                               context=context_for(_node(example, 0), config.to_run_config()))
    declined = reply_from(reply)
    assert isinstance(declined, DeclinedReply)
    assert "malformed" in declined.reason and "fedcare-version: missing" in declined.reason


def test_different_schema_is_refused_naming_both_hashes(example):
    _, sha256, _ = example
    admission = admit(settings=_settings(), node_config=_node(example),
                      run_config={"csv.schema-sha256": "f" * 64})
    assert isinstance(admission, Refused)
    assert f"schema has sha256 {sha256}, but the run config's csv.schema-sha256 is " \
        f"{'f' * 64}" in admission.reason


def test_a_hospital_whose_own_schema_file_differs_refuses(example, tmp_path):
    # Arrange: this hospital's copy allows one more chest-pain category
    _, sha256, _ = example
    changed = json.loads(json.dumps(EXAMPLE_SCHEMA))
    changed["features"][2]["categories"].append(5)
    own = tmp_path / "schema.json"
    own.write_text(json.dumps(changed))

    # Act
    admission = admit(settings=_settings(), run_config={"csv.schema-sha256": sha256},
                      node_config=_node(example, **{"schema-path": str(own)}))

    # Assert
    assert isinstance(admission, Refused)
    assert DataSchema.load(own).sha256 in admission.reason and sha256 in admission.reason


@pytest.mark.parametrize(
    ("node_changes", "message"),
    [
        pytest.param({"budget-epsilon": -1}, "node config budget-epsilon must be", id="epsilon"),
        pytest.param({"data-path": None}, "task 'csv' needs node config data-path", id="no-data"),
        pytest.param({"schema-path": None}, "needs node config schema-path", id="no-schema"),
    ],
)
def test_invalid_node_config_is_a_refusal_with_the_reason(example, node_changes, message):
    _, sha256, _ = example
    node = {k: v for k, v in {**_node(example), **node_changes}.items() if v is not None}
    admission = admit(settings=_settings(), node_config=node,
                      run_config={"csv.schema-sha256": sha256})
    assert isinstance(admission, Refused) and message in admission.reason


def test_bad_data_is_refused_with_counts_only_and_logged_locally(example, tmp_path, caplog):
    # Arrange: a secret value in a numeric column and a missing label
    schema_path, sha256, paths = example
    lines = paths[0].read_text().splitlines()
    lines[3] = "Jane Doe" + lines[3][2:]
    lines[5] = lines[5][:-1]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")

    # Act
    with caplog.at_level(logging.WARNING, logger="client.admission"):
        admission = admit(settings=_settings(), run_config={"csv.schema-sha256": sha256},
                          node_config=_node(example, **{"data-path": str(bad)}))

    # Assert
    assert isinstance(admission, Refused)
    assert "fails the schema check: 2 problems (" in admission.reason
    assert "Jane" not in admission.reason and "row" not in admission.reason
    assert "row 4, column age: non-numeric value" in caplog.text
    assert "row 6, column heart_disease: missing label" in caplog.text
    assert "Jane" not in caplog.text


def test_built_in_task_keeps_its_names_and_takes_the_ledger_name(example):
    admission = admit(settings=_settings(task="heart-disease", hospitals=4),
                      node_config={"partition-id": 2, "num-partitions": 4,
                                   "hospital-name": "bern"}, run_config={})
    assert isinstance(admission, Admitted)
    assert (admission.name, admission.data.name) == ("switzerland", "bern")
    assert (admission.csv, admission.data_sha256) == (None, "")


def test_node_without_partition_id_cannot_name_itself_and_raises(example):
    with pytest.raises(ValueError, match="no 'partition-id'"):
        admit(settings=_settings(), node_config={"data-path": "x"}, run_config={})


# --- through the ClientApp's handlers, as the server receives the replies ---------------


@pytest.fixture(scope="module")
def run(example):
    from server.federation import round_settings

    schema_path, sha256, _ = example
    config = RunConfig.from_run_config({
        "task": "csv", "hospitals": 2, "csv.schema-path": str(schema_path),
        "csv.schema-sha256": sha256, "dp.mode": "none", "local-steps": 2})
    weights = build_model(task_for_config(config), seed=0).get_weights()
    return config, round_settings(config, "run-1", 1), weights


def _call(app, run, node, message_type, **setting_changes):
    config, settings, weights = run
    settings = replace(settings, **setting_changes)
    return app(message=request_message(settings, weights, message_type),
               context=context_for(node, config.to_run_config()))


@pytest.mark.parametrize("message_type", ["train", "evaluate"])
def test_version_refusal_reaches_the_server_as_a_decline(example, run, message_type):
    # Act
    reply = _call(build_client_app(), run, _node(example, 0), message_type,
                  fedcare_version="99.0")

    # Assert
    parsed = reply_from(reply)
    assert isinstance(parsed, DeclinedReply) and parsed.statistics is None
    assert (parsed.hospital.name, parsed.hospital.index) == ("hospital-0", 0)
    assert "server runs fedcare 99.0" in parsed.reason


def test_admitted_csv_hospital_trains_and_keeps_its_preprocessing_by_its_ledger(
        example, run, tmp_path):
    # Arrange
    ledger = tmp_path / "ledgers" / "h1.json"
    node = _node(example, 1, **{"ledger-path": str(ledger), "dp-mode": "none"})

    # Act
    reply = _call(build_client_app(), run, node, "train")

    # Assert
    parsed = reply_from(reply)
    assert isinstance(parsed, TrainReply) and parsed.hospital.name == "hospital-1"
    assert [u.shape for u in parsed.update] == [w.shape for w in run[2]]
    assert any(np.abs(u).max() > 0 for u in parsed.update)
    saved = json.loads((tmp_path / "ledgers" / "h1.preprocessing.json").read_text())
    assert saved["schema_sha256"] == example[1] and saved["seed"] == 0
    assert set(saved["numeric"]) == {"age", "trestbps", "chol", "thalach", "oldpeak"}


def test_a_server_stating_other_normalisation_statistics_is_refused():
    settings = replace(_settings(task="heart-disease", hospitals=4),
                       normalisation_digest="ab" * 32)
    admission = admit(settings=settings, node_config={"partition-id": 0, "num-partitions": 4},
                      run_config={})
    assert isinstance(admission, Refused)
    assert "states shared normalisation statistics with digest abababababababab" in (
        admission.reason)


def test_per_hospital_normalisation_only_where_the_task_has_it():
    from common.wire.modes import Normalisation

    base = _settings(task="breast-cancer", hospitals=4)
    asked = replace(base, normalisation=Normalisation.PER_HOSPITAL, normalisation_digest="")
    admission = admit(settings=asked, node_config={"partition-id": 0, "num-partitions": 4},
                      run_config={})
    assert isinstance(admission, Refused) and "fixed public scale" in admission.reason
