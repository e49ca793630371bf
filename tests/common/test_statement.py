"""The privacy statement is derived from the reply manifest; the docs and the report agree.

Every part a reply of some mode may carry, and every header field every reply carries, is a DP
release on a ledger track or listed as not covered, with why; the lists are derived from
``common.wire.replies.MANIFEST`` here, never written out by hand.
"""

import re
from pathlib import Path

import pytest

import common.wire.replies as replies
from common.wire.modes import DpMode, NoiseMode
from common.wire.statement import (
    HEADER,
    all_modes,
    covered,
    not_covered,
    part_statement,
    reply_parts,
    statement_lines,
    undeclared_fields,
)
from server.report import privacy_statement

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODE = (DpMode.PATIENT, NoiseMode.LOCAL, False)


def test_every_field_of_every_reply_type_is_declared():
    assert undeclared_fields() == []


@pytest.mark.parametrize("mode", all_modes(), ids=lambda m: "-".join(map(str, m)))
def test_each_mode_splits_every_part_into_releases_and_exclusions(mode):
    dp_mode, noise_mode, secure = mode
    parts = set(reply_parts(*mode))
    releases = {p.part for p in covered(*mode)}
    excluded = {p.part for p in not_covered(*mode)}
    # Derived from the manifest: the header and exactly the parts this mode allows.
    assert parts == set(HEADER) | set(replies.allowed_parts(*mode)) | (
        {"secagg_next"} if secure else set())
    assert releases | excluded == parts and not releases & excluded
    if dp_mode == DpMode.NONE:
        assert releases == set()
    else:
        # Patient level also releases the consortium explanation (training track).
        explanation = {"attributions"} if dp_mode == DpMode.PATIENT else set()
        assert releases == {"secagg" if secure else "update", "statistics"} | explanation
        assert all(p.why and p.track is None for p in not_covered(*mode))
        assert {"hospital", "answers", "reason", "privacy"} <= excluded


def test_a_part_added_to_a_modes_manifest_shows_up_in_its_statement(monkeypatch):
    manifest = dict(replies.MANIFEST)
    manifest[DEFAULT_MODE] = manifest[DEFAULT_MODE] | {"train_loss"}
    monkeypatch.setattr(replies, "MANIFEST", manifest)
    assert "train_loss" in {p.part for p in not_covered(*DEFAULT_MODE)}
    assert any("(`train_loss`)" in line for line in statement_lines(*DEFAULT_MODE))


@pytest.mark.parametrize("mode", all_modes(), ids=lambda m: "-".join(map(str, m)))
def test_the_reports_statement_states_the_manifests_lists(mode):
    dp_mode, noise_mode, secure = mode
    config = {"dp_mode": dp_mode.value, "dp_noise_mode": noise_mode.value,
              "secagg_enabled": secure, "dp_accountant": "rdp", "dp_delta": 1e-5}
    text = "\n".join(privacy_statement(config, {}))
    for line in statement_lines(*mode):
        assert line in text


def _lead(path: Path, heading: str | None = None) -> str:
    """A page's lead: the paragraphs under its title (or under `heading`), before the next
    heading.
    """
    text = path.read_text()
    if heading is not None:
        text = text[text.index(heading) + len(heading):]
    else:
        text = text[text.index("\n") + 1:]
    return " ".join(re.split(r"\n## ", text, maxsplit=1)[0].split()).lower()


@pytest.mark.parametrize("page", [("README.md", "## Privacy in one screen"),
                                  ("docs/privacy.md", None),
                                  ("docs/data-protection-officer.md", None)],
                         ids=lambda page: page[0])
def test_the_docs_lead_paragraphs_name_every_release_and_every_exclusion(page):
    lead = _lead(ROOT / page[0], page[1])
    for part in covered(*DEFAULT_MODE) + not_covered(*DEFAULT_MODE):
        assert part.short in lead, (page[0], part.part, part.short)
    for part in covered(*DEFAULT_MODE):
        track = "test track" if part.part == "statistics" else "training track"
        assert track in lead, (page[0], part.part)
    assert part_statement("statistics").short == "evaluation"
