"""deploy-local's supervisor: a hospital process that exits is started again, within a cap.

Real processes (``true``, ``sleep``) in a real ``ProcessSet``, under deploy-local's own
``LocalDeployment.check_alive``; every process the test starts is stopped by the test.
"""

import shutil
import time
from pathlib import Path

import pytest

import simulations.deployment.deploy_local as deploy_local
from simulations.deployment.deploy_local import (
    DeployLayout,
    DeploymentError,
    DeploySettings,
    LocalDeployment,
)

TRUE = shutil.which("true") or "/bin/true"
SLEEP = shutil.which("sleep") or "/bin/sleep"


@pytest.fixture
def deployment(tmp_path):
    settings = DeploySettings(hospitals=2, task="heart-disease", rounds=1, out=tmp_path,
                              app_dir=tmp_path, lean_clientapp=False)
    said: list[str] = []
    running = LocalDeployment(settings, DeployLayout(tmp_path), said.append)
    running.said = said
    yield running
    assert running.processes.stop(grace_seconds=2.0) == []


def _exited(process, seconds=10.0):
    deadline = time.monotonic() + seconds
    while process.popen.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.popen.poll() is not None


def test_an_exited_worker_is_started_again_and_logged(deployment, tmp_path):
    first = deployment.processes.start("va-worker", [TRUE], cwd=tmp_path)
    _exited(first)

    deployment.check_alive()

    [again] = [p for p in deployment.processes.started if p.name == "va-worker"]
    assert again.popen.pid != first.popen.pid and again.argv == [TRUE]
    assert any("va-worker exited with status 0; restarted it" in line
               for line in deployment.said), deployment.said


def test_a_worker_exiting_more_often_than_the_cap_ends_the_deployment(deployment, tmp_path):
    deployment.processes.start("va-worker", [TRUE], cwd=tmp_path)
    cap = deployment.settings.restarts_per_minute
    for _ in range(cap):
        _exited(deployment.processes.started[-1])
        deployment.check_alive()
    _exited(deployment.processes.started[-1])

    with pytest.raises(DeploymentError, match=rf"va-worker exited .*restarted {cap} times "
                                              "within a minute already: the cap"):
        deployment.check_alive()
    assert deployment.restarts.total == cap


def test_the_superlinks_exit_ends_the_deployment(deployment, tmp_path):
    _exited(deployment.processes.start("superlink", [TRUE], cwd=tmp_path))
    with pytest.raises(DeploymentError, match="superlink exited with status 0"):
        deployment.check_alive()


def test_a_supernode_is_started_again_only_after_the_superlinks_heartbeat_lapses(
        deployment, tmp_path, monkeypatch):
    monkeypatch.setattr(deploy_local, "SUPERNODE_RESTART_DELAY_SECONDS", 0.5)
    node = deployment.processes.start("va", [TRUE], cwd=tmp_path)
    deployment.supernodes.add("va")
    _exited(node)

    deployment.check_alive()  # noticed: due in 0.5 s
    assert [p.popen.pid for p in deployment.processes.started] == [node.popen.pid]
    assert any("restarting it in 0 s" in line or "restarting it in 1 s" in line
               for line in deployment.said), deployment.said
    time.sleep(0.6)
    deployment.check_alive()

    [again] = deployment.processes.started
    assert again.popen.pid != node.popen.pid


def test_a_running_process_is_left_alone(deployment, tmp_path):
    sleeper = deployment.processes.start("va-worker", [SLEEP, "30"], cwd=tmp_path)
    deployment.check_alive()
    assert deployment.processes.started == [sleeper] and deployment.restarts.total == 0
    with pytest.raises(ValueError, match="is not an exited process"):
        deployment.processes.restart(sleeper)


def test_restarting_keeps_the_log_and_environment(deployment, tmp_path):
    script = tmp_path / "say.sh"
    script.write_text('echo "run $RUN_MARK"\n')
    first = deployment.processes.start("cleveland-worker", ["sh", str(script)], cwd=tmp_path,
                                       extra_env={"RUN_MARK": "x1"})
    _exited(first)
    deployment.check_alive()
    _exited(deployment.processes.started[-1])
    assert Path(first.log_path).read_text().splitlines() == ["run x1", "run x1"]
