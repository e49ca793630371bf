"""`fedcare budget report LEDGER --html FILE`: the officer's page, read with an HTML parser.

A hospital answers two rounds and declines one through the real ClientApp; the page written
from its ledger and disclosure log is then parsed (stdlib ``html.parser``) for what it must
show and for anything that would need a network.
"""

import json
import shutil
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from client.app import build_client_app
from common.config import RunConfig
from common.dp.disclosure_log import log_path
from common.dp.ledger import PrivacyLedger
from common.models import build_model
from common.tasks import get_task
from server.federation import round_settings
from simulations.cli.main import app as fedcare_cli
from tests.wire_messages import context_for, request_message

NODE = {"partition-id": 3, "num-partitions": 4, "budget-epsilon": 3.0}


class Page(HTMLParser):
    """The parsed page: every tag with its attributes, the text per section (h2 id)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.sections: dict[str, list[str]] = {"": []}
        self._section = ""
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "h2":
            self._section = dict(attrs).get("id", "")
            self.sections[self._section] = []

    def handle_data(self, data):
        self.sections[self._section].append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.sections[section]).split())

    def all_text(self) -> str:
        return " ".join(self.text(name) for name in self.sections)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    """Hospital va: budget init, rounds 1 and 2 answered, a run without DP declined."""
    home = tmp_path_factory.mktemp("va")
    ledger = home / "ledgers" / "va.json"
    env = {"FEDCARE_HOME": str(home)}
    done = CliRunner().invoke(fedcare_cli, ["budget", "init", str(ledger), "--epsilon", "3",
                                            "--head", str(home / "heads" / "va.head")], env=env)
    assert done.exit_code == 0, done.output
    weights = build_model(get_task("heart-disease"), seed=0).get_weights()
    app = build_client_app()
    node = {**NODE, "ledger-path": str(ledger)}
    for server_round, run in ((1, {}), (2, {}), (3, {"dp.mode": "none"})):
        config = RunConfig.from_run_config({"local-steps": 2, "num-server-rounds": 3, **run})
        app(message=request_message(round_settings(config, "run-7", server_round), weights),
            context=context_for(node, config.to_run_config()))
    return ledger, env


def _report(ledger, out, env):
    return CliRunner().invoke(fedcare_cli, ["budget", "report", str(ledger), "--html", str(out)],
                              env=env)


@pytest.fixture(scope="module")
def page(hospital, tmp_path_factory):
    ledger, env = hospital
    out = tmp_path_factory.mktemp("page") / "va.html"
    done = _report(ledger, out, env)
    assert done.exit_code == 0, done.output
    return Page(out.read_text(encoding="utf-8"))


def test_the_page_needs_no_network(page):
    names = {tag for tag, _ in page.tags}
    assert not names & {"script", "link", "img", "iframe", "object", "embed", "base"}
    for tag, attrs in page.tags:
        for name in ("src", "href", "action", "srcset"):
            assert name not in attrs, (tag, attrs)
        style = attrs.get("style") or ""
        assert "url(" not in style
    assert "url(" not in page.text("") and "@import" not in page.text("")


def test_the_budget_of_each_track_is_a_gauge(page, hospital):
    ledger = PrivacyLedger.read(hospital[0])
    spent = ledger.recorded_figures.patient
    labels = [attrs.get("aria-label", "") for tag, attrs in page.tags if tag == "svg"]
    assert f"training rows: epsilon {spent:.3f} of 3" in labels
    assert "test rows: epsilon 0.000 of 3" in labels
    assert "whole hospital: epsilon unbounded of 3" in labels


def test_spending_over_time_is_a_chart_with_one_line_per_track_spent(page):
    charts = [attrs for tag, attrs in page.tags
              if tag == "svg" and attrs.get("aria-label") == "epsilon spent over time"]
    assert len(charts) == 1
    assert sum(tag == "polyline" for tag, _ in page.tags) == 1  # only the training track spent


def test_each_run_with_its_rounds_what_left_and_the_epsilon(page, hospital):
    ledger = PrivacyLedger.read(hospital[0])
    text = page.text("runs")
    assert "Run run-7" in text and "rounds 1-3" in text and "3 requests" in text
    assert f"epsilon charged: train {ledger.recorded_figures.patient:.3f}" in text
    shapes = ", ".join("x".join(map(str, w.shape)) for w in
                       build_model(get_task("heart-disease"), seed=0).get_weights())
    assert f"arrays: 2 arrays [{shapes}] float32" in text
    records = [json.loads(line) for line in log_path(hospital[0]).read_text().splitlines()]
    privacy = next(r for record in records if record.get("outcome") == "answered"
                   for r in record["sent"]["records"] if r["name"] == "privacy")
    assert f"privacy: {', '.join(f['name'] for f in privacy['fields'])}" in text


def test_every_decline_with_its_reason(page, hospital):
    records = [json.loads(line) for line in log_path(hospital[0]).read_text().splitlines()]
    [declined] = [r for r in records if r.get("outcome") == "declined"]
    text = page.text("declined-requests")
    assert "run-7" in text and " ".join(declined["reason"].split()) in text


def test_the_chain_verification_and_the_budget_history(page):
    assert "Verified: the ledger matches its head file" in page.text("verification")
    assert "4 records, hash chain verified" in page.text("verification")
    history = page.text("budget-history")
    assert "budget-init" in history and "fedcare budget init" in history


def test_the_privacy_statement_in_plain_words(page):
    text = page.text("privacy-statement")
    assert "What the guarantee says" in text and "What it does not cover" in text
    assert "no server setting can raise it" in text
    assert "took part, when" in text


def test_a_tampered_log_is_written_up_as_not_verified(hospital, tmp_path):
    ledger, env = hospital
    copy = tmp_path / "ledgers"
    shutil.copytree(ledger.parent, copy)
    head = tmp_path / "va.head"
    head_data = json.loads((ledger.parent.parent / "heads" / "va.head").read_text())
    log = log_path(copy / "va.json")
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-1]) + "\n")  # the decline's record cut off
    head_data["ledger"] = str(copy / "va.json")
    head_data["log"]["path"] = str(log)
    head.write_text(json.dumps(head_data))
    out = tmp_path / "page.html"

    done = CliRunner().invoke(fedcare_cli, ["budget", "report", str(copy / "va.json"), "--html",
                                            str(out), "--head", str(head)], env=env)

    assert done.exit_code == 1
    text = Page(out.read_text()).text("verification")
    assert "NOT VERIFIED" in text
    assert "anchors record 4, but the log ends at record 3" in text
