"""A resumed server restores the run state its checkpoint kept, through the checkpoint files.

The counter of secure rounds short of contributors decides whether the next short round gets
its one more try: a server killed after such a round and resumed must not give a second one.
"""

from types import SimpleNamespace

import numpy as np

from server.checkpoint import Checkpoint, load_latest_checkpoint, save_checkpoint
from server.federation import RunState, _resume, checkpoint_extra


def _resumed(tmp_path, state: RunState) -> tuple[RunState, int]:
    save_checkpoint(tmp_path, Checkpoint(
        round=4, run_id="run-1", run_config={"task": "heart-disease"}, weights=state.weights,
        optimizer_state={}, metrics_rows=[], extra=checkpoint_extra(state)))
    run = SimpleNamespace(strategy=SimpleNamespace(optimizer=SimpleNamespace(state=None)),
                          run_id="run-1", config=SimpleNamespace(num_server_rounds=9))
    fresh = RunState(weights=[])
    first = _resume(run, fresh, load_latest_checkpoint(tmp_path))
    return fresh, first


def test_the_short_round_counter_survives_a_resume(tmp_path):
    state = RunState(weights=[np.zeros(3, np.float32)], short_rounds=1,
                     aborted_rounds=["round 4: 2 hospital(s) could take part"],
                     declined_rounds={"va": 2}, rounds_filed=4)

    restored, first = _resumed(tmp_path, state)

    assert first == 5
    assert restored.short_rounds == 1
    assert restored.aborted_rounds == state.aborted_rounds
    assert (restored.declined_rounds, restored.rounds_filed) == ({"va": 2}, 4)


def test_a_checkpoint_without_the_counter_resumes_with_none(tmp_path):
    state = RunState(weights=[np.zeros(3, np.float32)])
    extra = checkpoint_extra(state)
    extra.pop("short_rounds")
    save_checkpoint(tmp_path, Checkpoint(round=2, run_id="run-1", run_config={},
                                         weights=state.weights, optimizer_state={},
                                         metrics_rows=[], extra=extra))
    run = SimpleNamespace(strategy=SimpleNamespace(optimizer=SimpleNamespace(state=None)),
                          run_id="run-1", config=SimpleNamespace(num_server_rounds=9))
    fresh = RunState(weights=[], short_rounds=1)
    assert _resume(run, fresh, load_latest_checkpoint(tmp_path)) == 3
    assert fresh.short_rounds == 0
