"""The hospital worker and the light ClientApp that relays to it (client.worker, client.entry).

Fast tests run the worker's serve loop in a thread with small handlers; the slow test starts
``fedcare hospital-worker`` as a real process and compares its reply with fedcare's ClientApp
called directly.
"""

import contextlib
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

import client.worker
from client.entry import handle as entry_handle
from client.worker import serve
from client.worker_link import (
    WORKER_AUTHKEY_FILE,
    WORKER_SOCKET,
    WorkerKeyRefused,
    WorkerUnavailable,
    call_worker,
    ensure_authkey,
    ping_worker,
    wait_for_worker,
)
from common.wire.records import ARRAYS, pack_request
from common.wire.replies import TrainReply
from tests.wire_messages import reply_from

FEDCARE = Path(sys.executable).with_name("fedcare")
HEAVY_MODULES = ("tensorflow", "keras", "torch", "opacus")


def _message(content: RecordDict, message_type: str = "train") -> Message:
    return Message(content=content, metadata=Metadata(
        run_id=1, message_id="m1", src_node_id=1, dst_node_id=7, reply_to_message_id="",
        group_id="1", created_at=time.time(), ttl=3600.0, message_type=message_type))


def _context(node_config: dict, state: RecordDict | None = None) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config,
                   state=state if state is not None else RecordDict(), run_config={"seed": 0})


def counting_handler(msg: Message, context: Context) -> Message:
    """Echo the content; count the calls in Context.state (as secure aggregation keeps state)."""
    calls = int(context.state["counter"]["calls"]) if "counter" in context.state else 0
    context.state["counter"] = ConfigRecord({"calls": calls + 1,
                                             "partition": context.node_config["partition-id"]})
    return Message(content=msg.content, reply_to=msg)


def failing_handler(msg: Message, context: Context) -> Message:
    context.state["before-failure"] = ConfigRecord({"seen": True})
    raise ValueError("budget file unreadable")


class ThreadWorker:
    """``serve`` in a thread, ready once it answers a ping; stopped (and joined) by ``stop``."""

    def __init__(self, directory: Path, handler, **options) -> None:
        self.socket = directory / "w.sock"
        self.key_file = directory / "w.authkey"
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=serve, args=(self.socket, self.key_file, handler),
                                       kwargs={"stop_event": self.stop_event, **options},
                                       daemon=True)
        self.thread.start()
        # Not the socket file's existence: it appears at bind(), before listen().
        wait_for_worker(self.socket, self.key_file, timeout=30, check=self._check_alive)

    def _check_alive(self) -> None:
        assert self.thread.is_alive(), "the worker thread ended before it answered a ping"

    def node_config(self, **extra) -> dict:
        return {"partition-id": 1, "num-partitions": 2, WORKER_SOCKET: str(self.socket),
                WORKER_AUTHKEY_FILE: str(self.key_file), **extra}

    def stop(self) -> None:
        self.stop_event.set()
        with contextlib.suppress(WorkerUnavailable):  # wake the blocked accept() with one ping
            ping_worker(self.socket, ensure_authkey(self.key_file))
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def counting_worker(tmp_path: Path) -> Iterator[ThreadWorker]:
    worker = ThreadWorker(tmp_path, counting_handler)
    yield worker
    worker.stop()


def test_light_entry_imports_no_tensorflow_keras_torch_or_opacus():
    code = ("import sys, client.entry; "
            f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_relay_returns_the_reply_and_context_state_round_trips(counting_worker):
    # Arrange
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0.5], dtype=np.float32)]
    content = RecordDict({ARRAYS: ArrayRecord(weights)})
    context = _context(counting_worker.node_config(),
                       RecordDict({"kept": ConfigRecord({"bytes": b"\x00\x01"})}))

    # Act: two messages through the same (SuperNode-side) context
    first = entry_handle(_message(content), context)
    second = entry_handle(_message(content, "train.secagg_share"), context)

    # Assert
    for reply in (first, second):
        assert not reply.has_error()
        assert reply.metadata.reply_to_message_id == "m1"
        received = reply.content[ARRAYS].to_numpy_ndarrays()
        assert all(np.array_equal(a, b) for a, b in zip(received, weights, strict=True))
    assert context.state["counter"]["calls"] == 2
    assert context.state["counter"]["partition"] == 1
    assert context.state["kept"]["bytes"] == b"\x00\x01"


def test_handler_error_is_flowers_error_reply_and_keeps_the_state(tmp_path):
    worker = ThreadWorker(tmp_path, failing_handler)
    try:
        context = _context(worker.node_config())
        reply = entry_handle(_message(RecordDict()), context)
    finally:
        worker.stop()
    assert reply.has_error()
    assert reply.error.code == 2  # flwr ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert reply.error.reason == "<class 'ValueError'>:<'budget file unreadable'>"
    assert context.state["before-failure"]["seen"] is True


def test_wrong_key_is_refused_and_the_worker_keeps_serving(counting_worker, tmp_path):
    wrong = tmp_path / "other" / "wrong.authkey"
    with pytest.raises(WorkerUnavailable, match="refused this key"):
        call_worker(counting_worker.socket, ensure_authkey(wrong), _message(RecordDict()),
                    _context({"partition-id": 0}))
    context = _context(counting_worker.node_config())
    assert not entry_handle(_message(RecordDict()), context).has_error()
    assert context.state["counter"]["calls"] == 1


def _listen_late(delay: float, bound: threading.Event):
    """An ``open_listener`` whose socket file exists `delay` seconds before it listens."""
    real = client.worker.open_listener

    def open_listener(socket_path: Path, authkey: bytes):
        with socket.socket(socket.AF_UNIX) as early:  # bind() makes the file; no listen()
            early.bind(str(socket_path))
            bound.set()
            time.sleep(delay)
        return real(socket_path, authkey)  # replaces the stale file and listens

    return open_listener


def test_ready_means_a_ping_answered_not_the_socket_file(tmp_path, monkeypatch):
    # Arrange: a worker whose socket file appears 1 s before it listens (a loaded machine)
    bound = threading.Event()
    monkeypatch.setattr(client.worker, "open_listener", _listen_late(1.0, bound))
    started = time.monotonic()
    made: list[ThreadWorker] = []
    thread = threading.Thread(target=lambda: made.append(ThreadWorker(tmp_path,
                                                                      counting_handler)))
    thread.start()
    assert bound.wait(10)
    socket_path = tmp_path / "w.sock"

    # The old readiness test (the file exists) passes while a relay would be refused
    assert socket_path.exists()
    with pytest.raises(WorkerUnavailable, match="does not accept connections yet"):
        ping_worker(socket_path, ensure_authkey(tmp_path / "w.authkey"))

    # Act: ThreadWorker's own wait returns only once the worker serves
    thread.join(timeout=30)
    (worker,) = made
    try:
        context = _context(worker.node_config())
        reply = entry_handle(_message(RecordDict()), context)  # was: Connection refused
        assert time.monotonic() - started >= 1.0
    finally:
        worker.stop()

    # Assert
    assert not reply.has_error()
    assert context.state["counter"]["calls"] == 1


def test_waiting_for_a_socket_that_never_listens_names_it_at_the_deadline(tmp_path):
    socket_path = tmp_path / "never.sock"
    key_file = tmp_path / "never.authkey"
    ensure_authkey(key_file)
    with socket.socket(socket.AF_UNIX) as bound_only:
        bound_only.bind(str(socket_path))
        started = time.monotonic()
        with pytest.raises(WorkerUnavailable) as raised:
            wait_for_worker(socket_path, key_file, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert str(socket_path) in str(raised.value)
    assert "not ready within 0.5 s" in str(raised.value)
    assert "does not accept connections yet" in str(raised.value)


def test_waiting_with_the_wrong_key_fails_at_once(counting_worker, tmp_path):
    wrong = tmp_path / "other" / "wrong.authkey"
    ensure_authkey(wrong)
    started = time.monotonic()
    with pytest.raises(WorkerKeyRefused, match=str(counting_worker.socket)):
        wait_for_worker(counting_worker.socket, wrong, timeout=30)
    assert time.monotonic() - started < 5
    context = _context(counting_worker.node_config())  # and the worker goes on serving
    assert not entry_handle(_message(RecordDict()), context).has_error()


def test_a_ping_is_answered_without_calling_the_handler(counting_worker):
    for _ in range(3):
        ping_worker(counting_worker.socket, ensure_authkey(counting_worker.key_file))
    context = _context(counting_worker.node_config())
    entry_handle(_message(RecordDict()), context)
    assert context.state["counter"]["calls"] == 1


def test_waiting_stops_when_the_check_raises(tmp_path):
    def worker_died() -> None:
        raise RuntimeError("worker exited with status 1")

    with pytest.raises(RuntimeError, match="exited"):
        wait_for_worker(tmp_path / "w.sock", tmp_path / "w.authkey", timeout=30,
                        check=worker_died)


def _deployment(out: Path):
    from simulations.deployment.deploy_local import DeployLayout, DeploySettings, LocalDeployment

    layout = DeployLayout(out=out)
    settings = DeploySettings(hospitals=1, task="heart-disease", rounds=1, out=out, app_dir=out)
    reports: list[str] = []
    return LocalDeployment(settings, layout, reports.append), layout, reports


def test_deploy_local_waits_for_a_ping_not_the_socket_file(short_tmp_path, monkeypatch):
    # Arrange: hospital-0's worker at the layout's paths, listening 1 s after its file exists
    deployment, layout, reports = _deployment(short_tmp_path / "out")
    socket_path, key_file = layout.worker_files("hospital-0")
    socket_path.parent.mkdir(parents=True)
    bound = threading.Event()
    monkeypatch.setattr(client.worker, "open_listener", _listen_late(1.0, bound))
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(socket_path, key_file, counting_handler),
                              kwargs={"stop_event": stop}, daemon=True)
    thread.start()
    assert bound.wait(10)
    try:
        # Act
        deployment.wait_for_workers([socket_path])
        # Assert: it returned only once the worker serves
        ping_worker(socket_path, ensure_authkey(key_file))
        assert reports == ["1 hospital workers listening"]
    finally:
        stop.set()
        with contextlib.suppress(WorkerUnavailable):
            ping_worker(socket_path, ensure_authkey(key_file))
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_deploy_local_names_the_socket_and_log_of_a_worker_that_never_listens(
        short_tmp_path, monkeypatch):
    import simulations.deployment.deploy_local as deploy_local

    deployment, layout, _ = _deployment(short_tmp_path / "out")
    socket_path, key_file = layout.worker_files("hospital-0")
    socket_path.parent.mkdir(parents=True)
    ensure_authkey(key_file)
    monkeypatch.setattr(deploy_local, "WORKERS_READY_SECONDS", 0.5)
    with socket.socket(socket.AF_UNIX) as bound_only:
        bound_only.bind(str(socket_path))
        with pytest.raises(deploy_local.DeploymentError) as raised:
            deployment.wait_for_workers([socket_path])
    message = str(raised.value)
    assert str(socket_path) in message and "hospital-0-worker.log" in message
    assert "does not accept connections yet" in message


def test_socket_and_key_files_are_private(counting_worker):
    for path in (counting_worker.socket, counting_worker.key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_missing_worker_is_named_with_the_command_to_start_it(tmp_path):
    socket_path = tmp_path / "absent.sock"
    ensure_authkey(tmp_path / "absent.sock.authkey")
    with pytest.raises(WorkerUnavailable, match="fedcare hospital-worker --socket"):
        entry_handle(_message(RecordDict()), _context({"partition-id": 0,
                                                       WORKER_SOCKET: str(socket_path)}))


def test_worker_with_its_own_node_config_ignores_the_relayed_one(tmp_path):
    own = {"partition-id": 0, "num-partitions": 2, "budget-epsilon": 1.0}
    worker = ThreadWorker(tmp_path, counting_handler, node_config=own)
    try:
        context = _context(worker.node_config(**{"budget-epsilon": 1e9}))  # a tampering relay
        entry_handle(_message(RecordDict()), context)
    finally:
        worker.stop()
    assert context.state["counter"]["partition"] == 0  # the worker's own partition-id


def test_group_readable_key_file_is_refused(counting_worker):
    os.chmod(counting_worker.key_file, 0o640)
    with pytest.raises(ValueError, match="chmod 600"):
        entry_handle(_message(RecordDict()), _context(counting_worker.node_config()))
    os.chmod(counting_worker.key_file, 0o600)


# --- a real worker process with fedcare's ClientApp ---------------------------------------


def _heart_disease_train(node_config: dict) -> tuple[Message, Context]:
    from common.config import RunConfig
    from common.models import build_model
    from common.tasks import task_for_config
    from server.federation import round_settings

    config = RunConfig.from_run_config({"task": "heart-disease", "hospitals": 4,
                                        "dp.mode": "none", "local-steps": 2})
    settings = round_settings(config, "run-1", 1)
    weights = build_model(task_for_config(config), seed=0).get_weights()
    content = pack_request(settings, weights)
    context = Context(run_id=1, node_id=7, node_config=node_config,
                      state=RecordDict({"kept": ConfigRecord({"n": 3})}),
                      run_config=config.to_run_config())
    return _message(content), context


@pytest.mark.slow
def test_real_worker_process_replies_as_fedcare_client_app_directly(tmp_path):
    from client.app import app as fedcare_app

    socket_path, key_file = tmp_path / "worker.sock", tmp_path / "worker.authkey"
    worker = subprocess.Popen(
        [str(FEDCARE), "hospital-worker", "--socket", str(socket_path), "--authkey-file",
         str(key_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    try:
        def alive() -> None:
            assert worker.poll() is None, worker.stdout.read()

        wait_for_worker(socket_path, key_file, timeout=180, check=alive)
        node = {"partition-id": 0, "num-partitions": 4, "dp-mode": "none"}
        relayed_msg, relayed_ctx = _heart_disease_train(
            {**node, "ledger-path": str(tmp_path / "relayed.json"),
             WORKER_SOCKET: str(socket_path), WORKER_AUTHKEY_FILE: str(key_file)})
        direct_msg, direct_ctx = _heart_disease_train(
            {**node, "ledger-path": str(tmp_path / "direct.json")})

        relayed = entry_handle(relayed_msg, relayed_ctx)
        direct = fedcare_app(direct_msg, direct_ctx)

        assert not relayed.has_error() and not direct.has_error()
        assert set(relayed.content.keys()) == set(direct.content.keys())
        relayed_reply, direct_reply = reply_from(relayed), reply_from(direct)
        assert isinstance(relayed_reply, TrainReply) and isinstance(direct_reply, TrainReply)
        assert len(relayed_reply.update) == len(direct_reply.update) > 0
        for a, b in zip(relayed_reply.update, direct_reply.update, strict=True):
            np.testing.assert_array_equal(a, b)
        assert relayed_reply.hospital == direct_reply.hospital
        assert relayed_reply.num_examples == direct_reply.num_examples
        assert relayed_ctx.state["kept"]["n"] == 3
    finally:
        worker.terminate()
        try:
            output, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
    assert worker.returncode == 0, output
    assert not socket_path.exists(), "SIGTERM left the socket file behind"
