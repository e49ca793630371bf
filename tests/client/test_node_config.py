from pathlib import Path

import pytest

from client.node_config import NodeConfig


@pytest.fixture
def files(tmp_path):
    data, schema = tmp_path / "data.csv", tmp_path / "schema.json"
    data.write_text("a\n")
    schema.write_text("{}")
    return data, schema


def test_full_node_config_is_parsed(files, tmp_path):
    # Arrange
    data, schema = files
    raw = {"partition-id": 1, "num-partitions": 3, "hospital-name": "st-mary.north",
           "data-path": str(data), "schema-path": str(schema),
           "ledger-path": str(tmp_path / "ledger.json"), "budget-epsilon": 2,
           "budget-delta": 1e-6, "dp-mode": "hospital"}

    # Act
    node = NodeConfig.from_node_config(raw)

    # Assert
    assert node == NodeConfig(partition_id=1, num_partitions=3, hospital_name="st-mary.north",
                              data_path=data, schema_path=schema,
                              ledger_path=tmp_path / "ledger.json", budget_epsilon=2.0,
                              budget_delta=1e-6, dp_mode="hospital")
    assert node.csv_files() == (data, schema)


def test_simulation_node_config_needs_only_the_partition():
    node = NodeConfig.from_node_config({"partition-id": 0, "num-partitions": 4})
    assert (node.partition_id, node.budget_epsilon, node.ledger_path) == (0, None, None)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({}, "no 'partition-id'", id="no-partition"),
        pytest.param({"partition-id": -1}, "partition-id must be an integer >= 0", id="negative"),
        pytest.param({"partition-id": 1.5}, "partition-id must be an integer", id="float-id"),
        pytest.param({"partition-id": 3, "num-partitions": 3}, "must be < num-partitions=3",
                     id="id-out-of-range"),
        pytest.param({"partition-id": 0, "budget-epsilon": "lots"},
                     "budget-epsilon must be a number, got 'lots'", id="epsilon-text"),
        pytest.param({"partition-id": 0, "budget-epsilon": 0}, "budget-epsilon must be a finite "
                     "number > 0", id="epsilon-zero"),
        pytest.param({"partition-id": 0, "budget-epsilon": True}, "budget-epsilon", id="bool"),
        pytest.param({"partition-id": 0, "budget-delta": 1.0}, r"budget-delta must be in \(0, 1\)",
                     id="delta-one"),
        pytest.param({"partition-id": 0, "dp-mode": "strong"}, "dp-mode must be one of",
                     id="dp-mode"),
        pytest.param({"partition-id": 0, "hospital-name": "St Mary's"}, "hospital-name must be",
                     id="name"),
        pytest.param({"partition-id": 0, "data-path": "/nonexistent/fedcare/data.csv"},
                     r"data-path: /nonexistent/fedcare/data\.csv does not exist", id="no-data"),
        pytest.param({"partition-id": 0, "schema-path": ""}, "schema-path must be a file path",
                     id="empty-schema-path"),
        pytest.param({"partition-id": 0, "budget-epsilom": 1.0},
                     r"unknown keys \['budget-epsilom'\]", id="misspelt-key"),
    ],
)
def test_invalid_node_config_is_refused_naming_the_key(raw, message):
    with pytest.raises(ValueError, match=message):
        NodeConfig.from_node_config(raw)


def test_a_directory_is_not_a_data_file_or_a_ledger(tmp_path):
    with pytest.raises(ValueError, match="data-path: .* is not a file"):
        NodeConfig.from_node_config({"partition-id": 0, "data-path": str(tmp_path)})
    with pytest.raises(ValueError, match="ledger-path .* is a directory"):
        NodeConfig.from_node_config({"partition-id": 0, "ledger-path": str(tmp_path)})


def test_csv_task_without_data_or_schema_path_names_both(files):
    node = NodeConfig.from_node_config({"partition-id": 0})
    with pytest.raises(ValueError, match="task 'csv' needs node config data-path and schema-path"):
        node.csv_files()
    only_data = NodeConfig.from_node_config({"partition-id": 0, "data-path": str(files[0])})
    with pytest.raises(ValueError, match="needs node config schema-path:"):
        only_data.csv_files()


def test_ledger_path_expands_the_home_directory():
    node = NodeConfig.from_node_config({"partition-id": 0, "ledger-path": "~/fedcare/l.json"})
    assert node.ledger_path == Path.home() / "fedcare" / "l.json"
