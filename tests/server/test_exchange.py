"""fedcare's exchange: Flower's push, then pulls with a short sleep, until the replies or the
deadline; fedcare's in-process grids are called as they are.
"""

from types import SimpleNamespace

from flwr.serverapp import Grid

from server import exchange


class SlowGrid(Grid):
    """A Flower grid whose replies become available after `pulls_needed` pulls."""

    def __init__(self, pulls_needed: int | None) -> None:
        self.pulls_needed, self.pulls = pulls_needed, 0

    def push_messages(self, messages):
        return [f"id-{m}" for m in messages]

    def pull_messages(self, message_ids):
        self.pulls += 1
        if self.pulls_needed is None or self.pulls < self.pulls_needed:
            return []
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i))
                for i in sorted(message_ids)]

    create_message = get_node_ids = run = set_run = send_and_receive = None  # type: ignore


def test_replies_come_back_at_the_first_pull_that_has_them(monkeypatch):
    sleeps = []
    monkeypatch.setattr(exchange.time, "sleep", sleeps.append)
    grid = SlowGrid(pulls_needed=3)
    replies = exchange.send_and_receive(grid, ["a", "b"], timeout=60)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["id-a", "id-b"]
    assert grid.pulls == 3
    assert sleeps == [exchange.SUPERLINK_POLL_SECONDS] * 2  # not Flower's 3 s


def test_a_hospital_that_never_answers_is_absent_after_the_deadline():
    grid = SlowGrid(pulls_needed=None)
    assert exchange.send_and_receive(grid, ["a"], timeout=0.6) == []
    assert 2 <= grid.pulls <= 5  # about timeout / 0.25 s pulls, then it gives up


def test_a_grid_that_is_not_flowers_delivers_in_its_own_call():
    class Direct:
        def send_and_receive(self, messages, *, timeout):
            return iter([("reply", m, timeout) for m in messages])

    assert exchange.send_and_receive(Direct(), ["a"], timeout=5) == [("reply", "a", 5)]
