"""deploy-local's pure parts: commands, configs and the parsing of flwr's JSON."""

import tomllib
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from simulations.deployment.deploy_local import (
    Credentials,
    DeployLayout,
    DeploymentError,
    DeploySettings,
    check_out_dir,
    flower_config_toml,
    free_ports,
    hospital_names,
    node_config,
    online_nodes,
    parse_flwr_json,
    prepare_roster,
    run_config,
    run_status,
    secagg_parameters,
    superlink_argv,
    supernode_argv,
    toml_document,
    worker_argv,
)

BIN = Path("/venv/bin")


def settings(tmp_path: Path, **changes: object) -> DeploySettings:
    values: dict[str, object] = {"hospitals": 3, "task": "heart-disease", "rounds": 2,
                                 "out": tmp_path / "out", "app_dir": tmp_path / "app"}
    values.update(changes)
    return DeploySettings(**values)  # type: ignore[arg-type]


def test_toml_document_round_trips_through_flowers_parser(tmp_path: Path) -> None:
    values = {"partition-id": 2, "budget-epsilon": 0.5, "secagg.enabled": True,
              "data-path": str(tmp_path / "it's a \"file\" with spaces.csv"),
              "csv.schema-sha256": "ab" * 32}
    path = tmp_path / "node.toml"
    path.write_text(toml_document(values))
    assert parse_config_args([str(path)]) == values


def test_flower_config_names_the_connection_and_its_ca(tmp_path: Path) -> None:
    parsed = tomllib.loads(flower_config_toml("127.0.0.1:9", tmp_path / "ca.crt"))
    assert parsed["superlink"]["default"] == "fedcare"
    assert parsed["superlink"]["fedcare"] == {"address": "127.0.0.1:9",
                                              "root-certificates": str(tmp_path / "ca.crt")}
    insecure = tomllib.loads(flower_config_toml("127.0.0.1:9", None))
    assert insecure["superlink"]["fedcare"]["insecure"] is True


def test_superlink_argv_turns_on_tls_and_node_authentication(tmp_path: Path) -> None:
    credentials = Credentials(tmp_path / "ca.crt", tmp_path / "server.crt",
                              tmp_path / "server.key", {})
    argv = superlink_argv(BIN, port=4321, credentials=credentials)
    assert argv[0] == str(BIN / "flower-superlink")
    assert "--enable-supernode-auth" in argv and "--insecure" not in argv
    assert argv[argv.index("--ssl-certfile") + 1] == str(tmp_path / "server.crt")
    assert argv[argv.index("--port") + 1] == "4321"
    assert "--disable-runtime-dependency-installation" in argv
    insecure = superlink_argv(BIN, port=1, credentials=Credentials(None, None, None, {}))
    assert "--insecure" in insecure and "--enable-supernode-auth" not in insecure


def test_supernode_argv_carries_ca_key_and_node_config(tmp_path: Path) -> None:
    argv = supernode_argv(BIN, superlink="127.0.0.1:1", runtime_port=2,
                          node_config=tmp_path / "n.toml", ca_crt=tmp_path / "ca.crt",
                          private_key=tmp_path / "h.key")
    assert argv[argv.index("--root-certificates") + 1] == str(tmp_path / "ca.crt")
    assert argv[argv.index("--auth-supernode-private-key") + 1] == str(tmp_path / "h.key")
    assert argv[argv.index("--node-config") + 1] == str(tmp_path / "n.toml")
    assert argv[argv.index("--port") + 1] == "2"
    assert "--insecure" not in argv


def test_node_config_gives_each_hospital_its_index_ledger_and_pin(tmp_path: Path) -> None:
    s = settings(tmp_path, task="csv", budget_epsilon=2)
    layout = DeployLayout(s.out)
    config = node_config(s, layout, 1, "hospital-1", data_path=tmp_path / "h1.csv",
                         schema_path=tmp_path / "schema.json", app_sha256="00" * 32)
    assert config["partition-id"] == 1 and config["num-partitions"] == 3
    assert config["ledger-path"] == str((s.out / "ledgers" / "hospital-1.json").resolve())
    # The head apart from ledgers/: deleting or restoring that directory is refused.
    head = Path(str(config["ledger-head-path"]))
    assert (s.out / "ledgers").resolve() not in head.parents
    assert head.parent == layout.hospital_dir("hospital-1").resolve()
    assert config["budget-epsilon"] == 2.0 and isinstance(config["budget-epsilon"], float)
    assert config["data-path"] == str(tmp_path / "h1.csv")
    assert config["app-sha256"] == "00" * 32
    plain = node_config(settings(tmp_path), layout, 0, "cleveland", data_path=None,
                        schema_path=None, app_sha256=None)
    assert not {"data-path", "schema-path", "app-sha256"} & set(plain)


def test_node_config_names_each_hospitals_worker_and_the_worker_reads_that_file(
        tmp_path: Path) -> None:
    from client.node_config import NodeConfig

    s = settings(tmp_path)
    layout = DeployLayout(s.out)
    config = node_config(s, layout, 2, "switzerland", data_path=None, schema_path=None,
                         app_sha256=None)
    socket_path, key_file = layout.worker_files("switzerland")
    assert config["worker-socket"] == str(socket_path.resolve())
    assert config["worker-authkey-file"] == str(key_file.resolve())
    NodeConfig.from_node_config(config)  # known keys: the ClientApp accepts them
    argv = worker_argv(BIN, socket_path=socket_path, key_file=key_file,
                       node_config_file=layout.nodes / "switzerland.toml")
    assert argv[:2] == [str(BIN / "fedcare"), "hospital-worker"]
    assert argv[argv.index("--node-config") + 1] == str(layout.nodes / "switzerland.toml")
    without = node_config(settings(tmp_path, hospital_workers=False), layout, 2, "switzerland",
                          data_path=None, schema_path=None, app_sha256=None)
    assert not {"worker-socket", "worker-authkey-file"} & set(without)


def test_run_config_is_valid_and_carries_the_schema_hash(tmp_path: Path) -> None:
    from common.config import RunConfig

    s = settings(tmp_path)
    config = run_config(s, DeployLayout(s.out), schema_path=None, schema_sha256=None)
    parsed = RunConfig.from_run_config(config)
    assert (parsed.num_server_rounds, parsed.hospitals) == (2, 3)
    assert parsed.out_dir == str((s.out / "run").resolve())
    csv_config = run_config(settings(tmp_path, task="csv"), DeployLayout(s.out),
                            schema_path=tmp_path / "schema.json", schema_sha256="cd" * 32)
    assert csv_config["csv.schema-sha256"] == "cd" * 32


def test_hospital_names_use_the_tasks_names() -> None:
    assert hospital_names("heart-disease", 2) == ["cleveland", "hungary"]
    assert hospital_names("csv", 3) == ["hospital-0", "hospital-1", "hospital-2"]


def test_parse_flwr_json_skips_banner_and_reports_missing_json() -> None:
    assert parse_flwr_json('Loading...\n{"success": true, "run-id": 7}\n')["run-id"] == 7
    with pytest.raises(DeploymentError, match="no JSON"):
        parse_flwr_json("Traceback: boom")


def test_run_status_and_online_nodes_read_flwr_listings() -> None:
    listing = {"runs": [{"run-id": "5", "status": "finished:failed", "status-details": "x"}]}
    assert run_status(listing, "5") == ("finished:failed", "x")
    with pytest.raises(DeploymentError, match="run 6"):
        run_status(listing, "6")
    nodes = {"nodes": [{"status": "online"}, {"status": "registered"}, {"status": "online"}]}
    assert online_nodes(nodes) == 2


def test_check_out_dir_refuses_non_empty_and_bundled_locations(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "runs").mkdir(parents=True)
    check_out_dir(tmp_path / "new", app)
    check_out_dir(app / "runs" / "deploy", app)
    with pytest.raises(DeploymentError, match="inside the app directory"):
        check_out_dir(app / "deploy", app)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DeploymentError, match="not empty"):
        check_out_dir(tmp_path / "full", app)


def test_free_ports_are_distinct() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5 and all(0 < port < 65536 for port in ports)


def secure_deployment(tmp_path: Path, hospitals: int = 4, **changes: object):
    """Settings, layout, roster, run config and node configs as deploy_local makes them."""
    s = settings(tmp_path, hospitals=hospitals, dp_mode="hospital", secure_aggregation=True,
                 **changes)
    layout = DeployLayout(s.out)
    names = hospital_names(s.task, s.hospitals)
    plain = run_config(s, layout, schema_path=None, schema_sha256=None)
    threshold, honest = secagg_parameters(plain)
    roster = prepare_roster(layout, names, threshold=threshold, honest=honest)
    config = run_config(s, layout, schema_path=None, schema_sha256=None, roster=roster)
    nodes = {name: node_config(s, layout, index, name, data_path=None, schema_path=None,
                               app_sha256=None, roster=roster)
             for index, name in enumerate(names)}
    return s, layout, names, roster, config, nodes


def test_secure_deployment_pins_one_roster_of_the_runs_hospitals(tmp_path: Path) -> None:
    import stat

    from client.node_config import NodeConfig
    from common.config import RunConfig
    from common.secagg.roster import load_roster, load_signing_key, signing_public_key

    s, layout, names, roster, config, nodes = secure_deployment(tmp_path)
    parsed = RunConfig.from_run_config(config)
    assert parsed.secagg_enabled and config["secagg.enabled"] is True
    assert parsed.secagg_roster_path == str(layout.roster.resolve())
    server_copy = load_roster(parsed.secagg_roster_path,
                              expected_sha256=parsed.secagg_roster_sha256)
    # the run's names in order, c = 1 (collusion assumed from 4 hospitals on), min threshold =
    # the smallest majority of 4 hospitals; h = t - c per round
    assert server_copy.names == tuple(names) == ("cleveland", "hungary", "switzerland", "va")
    assert (server_copy.colluders, server_copy.min_threshold, server_copy.honest) == (1, 3, None)
    assert server_copy.built_by == "fedcare deploy-local"
    assert server_copy.min_threshold == parsed.effective_threshold
    for name, node in nodes.items():
        hospital = NodeConfig.from_node_config(node)  # known keys, existing files
        assert hospital.roster_path == layout.hospital_roster(name).resolve()
        assert hospital.roster_path.is_relative_to(layout.hospital_dir(name).resolve())
        assert load_roster(hospital.roster_path, expected_sha256=hospital.roster_sha256
                           ) == server_copy
        assert hospital.roster_sha256 == roster.sha256 == parsed.secagg_roster_sha256
        assert hospital.colluding_hospitals == server_copy.colluders  # its own stated minimum
        key_file = hospital.signing_key_path
        assert key_file == layout.signing_key(name).resolve()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        # each hospital's key is the one the roster pins for its name
        key = signing_public_key(load_signing_key(key_file.read_bytes()))
        assert server_copy.public_key(name).public_bytes_raw() == key
    assert len({node["signing-key-path"] for node in nodes.values()}) == len(names)


def test_secure_deployment_takes_the_configured_threshold_and_h(tmp_path: Path) -> None:
    _, _, _, roster, config, _ = secure_deployment(
        tmp_path, extra_run_config={"secagg.threshold": 4, "secagg.honest-contributors": 2})
    from common.secagg.roster import load_roster

    pinned = load_roster(roster.server_copy)
    assert (pinned.min_threshold, pinned.honest) == (4, 2)
    assert config["secagg.threshold"] == 4


def test_secagg_enabled_in_the_extra_run_config_counts_as_secure_aggregation(
        tmp_path: Path) -> None:
    assert settings(tmp_path, extra_run_config={"secagg.enabled": True}).uses_secure_aggregation
    assert settings(tmp_path, secure_aggregation=True).uses_secure_aggregation
    assert not settings(tmp_path).uses_secure_aggregation


def test_plain_deployment_has_no_roster_keys(tmp_path: Path) -> None:
    s = settings(tmp_path)
    layout = DeployLayout(s.out)
    config = run_config(s, layout, schema_path=None, schema_sha256=None)
    node = node_config(s, layout, 0, "cleveland", data_path=None, schema_path=None,
                       app_sha256=None)
    assert not {"secagg.enabled", "secagg.roster-path", "secagg.roster-sha256"} & set(config)
    assert not {"roster-path", "roster-sha256", "signing-key-path"} & set(node)


def test_prepare_roster_refuses_an_existing_signing_key(tmp_path: Path) -> None:
    layout = DeployLayout(tmp_path / "out")
    layout.hospital_dir("b").mkdir(parents=True)
    layout.signing_key("b").write_bytes(b"kept")
    with pytest.raises(DeploymentError, match="signing.key already exists"):
        prepare_roster(layout, ["a", "b", "c"], threshold=2)
    assert layout.signing_key("b").read_bytes() == b"kept"
