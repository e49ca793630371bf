"""deploy-local's per-message path: the fork servers' files and environment, the SuperNode."""

from pathlib import Path

import flwr
import pytest

from client.fork_protocol import KEY_VARIABLE, SERVER_VARIABLE
from simulations.deployment.deploy_local import (
    DeployLayout,
    DeploymentError,
    DeploySettings,
    LocalDeployment,
)
from simulations.deployment.message_path import (
    fork_server_argv,
    fork_server_env,
    fork_server_files,
    supernode_entry,
)

BIN = Path("/venv/bin")


def test_a_hospitals_fork_server_lives_in_its_directory_and_its_supernode_names_it(tmp_path):
    socket_path, key_file = fork_server_files(tmp_path / "hospitals" / "north")
    assert socket_path.parent == key_file.parent == tmp_path / "hospitals" / "north"
    assert fork_server_argv(BIN, socket_path, key_file) == [
        "/venv/bin/fedcare-clientapp-server", "--socket", str(socket_path),
        "--authkey-file", str(key_file)]
    assert fork_server_env(socket_path, key_file) == {SERVER_VARIABLE: str(socket_path),
                                                      KEY_VARIABLE: str(key_file)}


def test_the_supernode_is_fedcares_with_the_idle_poll_or_flowers_without():
    said: list[str] = []
    assert supernode_entry(BIN, 0.25, said.append) == [
        "/venv/bin/fedcare-supernode", "--idle-poll-seconds", "0.25"]
    assert supernode_entry(BIN, None, said.append) == ["/venv/bin/flower-supernode"]
    assert said == []


def test_on_another_flwr_deploy_local_runs_flowers_supernode_and_says_so(monkeypatch):
    monkeypatch.setattr(flwr, "__version__", "1.43.0")
    said: list[str] = []
    assert supernode_entry(BIN, 0.25, said.append) == ["/venv/bin/flower-supernode"]
    assert len(said) == 1 and "3 s idle poll" in said[0] and "1.43.0" in said[0]


def test_a_fork_server_socket_path_too_long_is_a_deployment_error(tmp_path):
    out = tmp_path / ("x" * 90)
    settings = DeploySettings(hospitals=1, task="heart-disease", rounds=1, out=out,
                              app_dir=tmp_path)
    deployment = LocalDeployment(settings, DeployLayout(out), report=lambda line: None)
    with pytest.raises(DeploymentError, match="longer than 107 bytes.*choose a shorter --out"):
        deployment.start_fork_servers(["cleveland"])
    assert deployment.processes.started == []


def test_without_the_lean_clientapp_no_fork_server_starts(tmp_path):
    settings = DeploySettings(hospitals=1, task="heart-disease", rounds=1, out=tmp_path / "o",
                              app_dir=tmp_path, lean_clientapp=False)
    deployment = LocalDeployment(settings, DeployLayout(tmp_path / "o"), lambda line: None)
    assert deployment.start_fork_servers(["cleveland"]) == {}
    assert deployment.processes.started == []


def test_the_fork_server_socket_fits_wherever_the_workers_does(tmp_path):
    layout = DeployLayout(tmp_path / "out")
    for name in ("cleveland", "hospital-0", "switzerland"):
        fork_socket, _ = fork_server_files(layout.hospital_dir(name))
        worker_socket, _ = layout.worker_files(name)
        assert len(str(fork_socket)) <= len(str(worker_socket))
