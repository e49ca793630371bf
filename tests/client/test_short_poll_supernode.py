"""fedcare-supernode: Flower 1.42's SuperNode with its idle poll shortened, and nothing else."""

import inspect
import socket
import time

import flwr
import pytest

from client import short_poll_supernode
from client.short_poll_supernode import (
    IDLE_SLEEP,
    REPLY_SLEEP,
    PollClock,
    patch_problems,
    patch_supernode,
    runtime_api_address,
    split_arguments,
    supernode_module,
)


def _elapsed(clock: PollClock, seconds: float) -> float:
    start = time.monotonic()
    clock.sleep(seconds)
    return time.monotonic() - start


def test_the_installed_supernode_is_the_one_the_patch_was_written_for():
    assert patch_problems(str(flwr.__version__), inspect.getsource(supernode_module())) == []


def test_another_flwr_minor_is_refused_naming_both_versions():
    source = inspect.getsource(supernode_module())
    problems = patch_problems("1.43.0", source)
    assert problems == ["fedcare-supernode is written for flwr 1.42.x; the installed flwr is "
                        "1.43.0"]


@pytest.mark.parametrize("edit", [
    ("time.sleep(3)", "time.sleep(2)"),
    ("time.sleep(0.5)", "time.sleep(0.25)"),
    ("time.sleep(3)", "time.sleep(IDLE)"),
    ("                time.sleep(3)\n", "                time.sleep(3)\n    time.sleep(3)\n"),
], ids=["idle-changed", "reply-changed", "idle-named", "extra-sleep"])
def test_a_changed_supernode_loop_is_refused(edit):
    source = inspect.getsource(supernode_module()).replace(*edit, 1)
    problems = patch_problems(str(flwr.__version__), source)
    assert len(problems) == 1 and "not the SuperNode this entry point was written for" in (
        problems[0])


def test_the_clock_shortens_only_flowers_two_poll_sleeps():
    clock = PollClock(idle_seconds=0.05, reply_seconds=0.01)
    assert _elapsed(clock, IDLE_SLEEP) < 1.0  # 3 s in Flower's SuperNode
    assert _elapsed(clock, REPLY_SLEEP) < 0.3  # 0.5 s
    assert _elapsed(clock, 0.2) >= 0.2  # any other sleep is time's own
    assert clock.monotonic is time.monotonic and clock.time is time.time


def test_patching_replaces_the_supernode_modules_clock_only(monkeypatch):
    module = supernode_module()
    monkeypatch.setitem(module.__dict__, "time", module.time)  # restored after the test
    patch_supernode(module, 0.25)
    assert isinstance(module.time, PollClock)
    assert module.time.idle_seconds == 0.25 and module.time.reply_seconds < REPLY_SLEEP
    assert time.sleep is not module.time.sleep  # the time module itself is untouched


def test_its_own_option_is_taken_and_the_rest_is_flowers():
    seconds, rest = split_arguments(["--insecure", "--idle-poll-seconds", "0.5", "--superlink",
                                     "127.0.0.1:9092", "--node-config", "a=1"])
    assert seconds == 0.5
    assert rest == ["--insecure", "--superlink", "127.0.0.1:9092", "--node-config", "a=1"]
    assert split_arguments(["--insecure"])[0] == 0.25


@pytest.mark.parametrize("value", ["0", "5", "fast"])
def test_an_idle_poll_out_of_range_is_refused(value, capsys):
    with pytest.raises(SystemExit) as stopped:
        split_arguments(["--idle-poll-seconds", value])
    assert stopped.value.code == 2
    assert "--idle-poll-seconds" in capsys.readouterr().err


def test_main_refuses_to_start_on_another_flwr(monkeypatch):
    module = supernode_module()
    monkeypatch.setitem(module.__dict__, "time", module.time)
    monkeypatch.setattr(flwr, "__version__", "1.43.0")
    with pytest.raises(SystemExit) as stopped:
        short_poll_supernode.main(["--insecure", "--port", "0"])  # any free port
    assert "installed flwr is 1.43.0" in str(stopped.value.code)
    assert "Start Flower's own flower-supernode instead" in str(stopped.value.code)
    assert module.time is time  # nothing patched


def test_the_runtime_api_address_is_flowers_default_or_the_given_one():
    assert runtime_api_address(["--insecure"]) == ("127.0.0.1", 9094)
    assert runtime_api_address(["--port", "9095", "--host", "0.0.0.0"]) == ("0.0.0.0", 9095)
    assert runtime_api_address(["--port", "x"]) == ("127.0.0.1", None)


def test_a_second_supernode_on_a_taken_port_is_refused_naming_the_port(monkeypatch):
    module = supernode_module()
    monkeypatch.setitem(module.__dict__, "time", module.time)
    with socket.socket() as first:  # the first SuperNode's Runtime API
        first.bind(("127.0.0.1", 0))
        first.listen()
        port = first.getsockname()[1]
        with pytest.raises(SystemExit) as stopped:
            short_poll_supernode.main(["--insecure", "--port", str(port)])
    message = str(stopped.value.code)
    assert message.startswith(f"fedcare-supernode: port {port} on 127.0.0.1")
    assert "give each SuperNode its own --port" in message
    assert module.time is time  # refused before anything of Flower's was patched or started
