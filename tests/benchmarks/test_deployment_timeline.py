"""The deployed round's timeline, parsed from Flower log lines as flwr 1.42 writes them."""

import pytest

from benchmarks.deployment_timeline import (
    PARTS,
    exchanges,
    exchanges_per_round,
    node_tasks,
    read_events,
    steady_parts,
)

ESC = "\x1b"


def line(level: str, second: float, text: str) -> str:
    """A Flower console line at DEBUG level (coloured, local time, milliseconds)."""
    whole, millis = int(second), round((second - int(second)) * 1000)
    return (f"{ESC}[94m{level} 2026-12-01 11:32:{whole:02d},{millis:03d}{ESC}[0m:     {text}")


def node_log(kinds_and_starts: list[tuple[str, float]]) -> list[str]:
    """A SuperNode log: each message received at t, process up 2 s later, reply 0.5 s after."""
    lines = ["INFO:     127.0.0.1:1 - \"POST /v1/runtime/acquire-task HTTP/1.1\" 200 OK"]
    for kind, t in kinds_and_starts:
        lines += [line("INFO", t, f"Receiving: {kind} message (ID: ab)"),
                  line("DEBUG", t + 0.1, "Runtime.AcquireTask"),
                  line("DEBUG", t + 2.0, "Runtime.PullTaskInput"),
                  line("DEBUG", t + 2.5, "Runtime.PushMessages"),
                  line("INFO", t + 2.75, f"Sending: {kind} message (ID: cd)")]
    return lines


def test_events_keep_only_timestamped_lines_without_colour_codes():
    events = read_events([line("DEBUG", 4.733, "Runtime.PushMessages"), "INFO: access line",
                          "Successfully installed fedcare"])
    assert [event.text for event in events] == ["Runtime.PushMessages"]
    later = read_events([line("DEBUG", 5.233, "x")])[0]
    assert later.time - events[0].time == pytest.approx(0.5, abs=1e-6)


def test_a_node_task_runs_from_receiving_to_sending():
    tasks = node_tasks(read_events(node_log([("train", 10.0), ("evaluate", 20.0)])))
    assert [task.kind for task in tasks] == ["train", "evaluate"]
    first = tasks[0]
    assert (first.started - first.received, first.replied - first.started,
            first.sent - first.replied) == pytest.approx((2.0, 0.5, 0.25), abs=1e-6)


def superlink_log(pushes: list[float], pulls: list[float]) -> list[str]:
    return sorted([line("DEBUG", t, "Runtime.PushMessages") for t in pushes]
                  + [line("DEBUG", t, "Runtime.PullMessages") for t in pulls])


def test_parts_of_an_exchange_follow_the_hospital_that_replied_last():
    superlink = read_events(superlink_log([9.0, 19.0], [9.1, 12.1, 15.1, 18.1, 19.1, 22.1, 25.1]))
    fast = node_tasks(read_events(node_log([("train", 10.0), ("evaluate", 20.0)])))
    slow = node_tasks(read_events(node_log([("train", 11.0), ("evaluate", 21.0)])))
    run = exchanges(superlink, [fast, slow])
    assert [e.kind for e in run] == ["train", "evaluate"]
    parts = run[0].parts
    # slow node: received 11.0, started 13.0, replied 13.5, sent 13.75; server pulls at 15.1
    assert parts == pytest.approx({"node poll": 2.0, "process start": 2.0, "hospital work": 0.5,
                                   "reply hand-off": 0.25, "server poll": 1.35,
                                   "server work": 3.9}, abs=1e-6)
    assert run[0].seconds == pytest.approx(19.0 - 9.0, abs=1e-6)  # push to next push
    assert "server work" not in run[1].parts  # the last exchange has no next push


def test_folded_rounds_make_one_exchange_each_unfolded_two():
    folded = ["train"] * 5 + ["evaluate"]
    unfolded = ["train", "evaluate"] * 3
    for kinds, expected in ((folded, [1] * 4), (unfolded, [2, 2])):
        pushes = [10.0 * k for k in range(len(kinds))]
        starts = [(kind, t + 1) for kind, t in zip(kinds, pushes, strict=True)]
        node = node_tasks(read_events(node_log(starts)))
        superlink = read_events(superlink_log(pushes, [t + 5 for t in pushes]))
        run = exchanges(superlink, [node])
        assert exchanges_per_round(run) == expected
        steady = steady_parts(run)
        assert set(steady) == set(PARTS)
        per_round = expected[0]
        assert steady["process start"] == pytest.approx(2.0 * per_round, abs=1e-6)


def test_logs_without_debug_timestamps_or_cut_short_are_refused():
    with pytest.raises(ValueError, match="FLWR_LOG_LEVEL=DEBUG"):
        exchanges([], [[]])
    superlink = read_events(superlink_log([9.0, 19.0], [15.0, 25.0]))
    one_task = node_tasks(read_events(node_log([("train", 10.0)])))
    with pytest.raises(ValueError, match="1 handled messages for 2 ServerApp pushes"):
        exchanges(superlink, [one_task])
