"""Tests for ReleaseStore.round_lock: two concurrent requests for one round give one release."""

import multiprocessing
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from client.release_store import Release, ReleaseKey, ReleaseStore
from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger

EVENT = GaussianRoundEvent(1.0, 1.0, 1, "hospital")
KEY = ReleaseKey(run_id="run", server_round=1, level="hospital", noise_mode="local",
                 secure=False, settings=(("clipping-norm", 0.5),), weights_digest="d" * 64,
                 roster_digest="", threshold=0, colluders=0, honest=0)


def _answer(ledger_path: str, use_lock: bool) -> list[float]:
    """One request for round 1: check, draw fresh noise, save, charge (as the lead's round)."""
    store = ReleaseStore(Path(ledger_path))
    ledger = PrivacyLedger.open(Path(ledger_path), hospital="va")

    def release() -> list[float]:
        saved = store.load("run", 1, "hospital")
        if saved is not None:
            ledger.charge("run", 1, saved.release.event)
            return saved.release.update[0].tolist()
        time.sleep(0.3)  # the noise draw and training take a while
        update = [np.random.default_rng().normal(size=4)]
        store.save(KEY, Release(update, EVENT, float("nan"), 1.0))
        ledger.charge("run", 1, EVENT)
        return update[0].tolist()

    if not use_lock:
        return release()
    with store.round_lock("run", 1, "hospital"):
        return release()


def _in_process(ledger_path: str, queue) -> None:
    queue.put(_answer(ledger_path, True))


@pytest.fixture
def ledger_path(tmp_path):
    path = tmp_path / "va.json"
    PrivacyLedger.create(path, hospital="va", budget_epsilon=5.0, budget_delta=1e-5)
    return path


def _threads(ledger_path, use_lock):
    replies = [None, None]

    def run(i):
        replies[i] = _answer(str(ledger_path), use_lock)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return replies


def test_two_threads_for_one_round_get_one_release(ledger_path):
    first, second = _threads(ledger_path, use_lock=True)

    assert first == second
    assert len(PrivacyLedger.open(ledger_path, hospital="va").entries) == 1


def test_without_the_lock_two_threads_release_two_different_updates(ledger_path):
    # The control: the race the lock closes (both draw noise, one charge).
    first, second = _threads(ledger_path, use_lock=False)

    assert first is not None and second is not None  # both answered (neither thread failed)
    assert first != second
    assert len(PrivacyLedger.open(ledger_path, hospital="va").entries) == 1


def test_two_processes_for_one_round_get_one_release(ledger_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_in_process, args=(str(ledger_path), queue))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    replies = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)

    assert replies[0] == replies[1]
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(PrivacyLedger.open(ledger_path, hospital="va").entries) == 1


def test_the_lock_blocks_a_second_holder_until_the_first_leaves(ledger_path):
    store = ReleaseStore(ledger_path)
    entered = threading.Event()
    order = []

    def second():
        entered.wait()
        with store.round_lock("run", 1, "hospital"):
            order.append("second")

    worker = threading.Thread(target=second)
    worker.start()
    with store.round_lock("run", 1, "hospital"):
        entered.set()
        time.sleep(0.2)
        order.append("first")
    worker.join()

    assert order == ["first", "second"]


def test_saved_release_keeps_its_noise_mode(ledger_path):
    store = ReleaseStore(ledger_path)
    event = GaussianRoundEvent(1.0, 1.0, 1, "hospital", noise_mode="distributed")

    key = replace(KEY, server_round=2, noise_mode="distributed")
    store.save(key, Release([np.zeros(3)], event, float("nan"), 0.5))

    saved = store.load("run", 2, "hospital")
    assert saved.release.event == event and saved.key == key
