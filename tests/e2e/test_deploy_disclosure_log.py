"""End to end: a deployed run (``fedcare deploy-local``: a real SuperLink and SuperNodes), then
a second into the same --out with --force; each hospital's disclosure log after both.

Each log verifies against its chain and the anchor in the hospital's head file; every request
record carries the deployed run's Flower run id and the hospital's registered node id; every
ledger entry is recorded once, as charged by the request that made it; every round of the run
has the hospital's train record (answered, or declined once the first run spent the budget).
--force kept the ledgers (the budget carried on) and set the previous run aside.
"""

import csv
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from processes import wait_until_gone  # noqa: E402

from common.dp.disclosure_log import verify_beside  # noqa: E402
from common.dp.ledger import PrivacyLedger  # noqa: E402

pytestmark = pytest.mark.slow

HOSPITALS = ("cleveland", "hungary", "switzerland")
ROUNDS = 2


def _deploy(fedcare_cli, out: Path, *extra: str) -> str:
    proc, marker = fedcare_cli("deploy-local", "--hospitals", str(len(HOSPITALS)), "--rounds",
                               str(ROUNDS), "--out", str(out), "--epsilon", "10", "--timeout",
                               "900", *extra, timeout=1200)
    assert wait_until_gone(marker, 20.0) == []
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    found = re.search(r"run (\d+) finished", " ".join((proc.stdout + proc.stderr).split()))
    assert found, proc.stderr[-3000:]
    return found.group(1)


def _check_logs(out: Path, run_ids: list[str]) -> dict[str, list[dict]]:
    with open(out / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    logs = {}
    for name in HOSPITALS:
        ledger = PrivacyLedger.read(out / "ledgers" / f"{name}.json",
                                    head_path=out / "hospitals" / name / "ledger.head")
        verification = verify_beside(ledger)
        assert verification.ok and verification.unanchored == 0, verification.problems
        requests = [r for r in verification.records if r["event"] == "request"]
        assert {str(r["flower"]["run_id"]) for r in requests} == set(run_ids)
        assert len({r["flower"]["message_id"] for r in requests}) == len(requests)
        for run_id in run_ids:  # each deployment registers the hospital's node anew
            assert len({r["flower"]["node_id"] for r in requests
                        if str(r["flower"]["run_id"]) == run_id}) == 1
        charged = Counter((e["run"], e["round"], e["level"], e["track"]) for r in requests
                          for e in r.get("releases", []) if e["charged"] == "this request")
        assert charged == Counter(entry.key for entry in ledger.entries)
        last_run = [r for r in requests if str(r["flower"]["run_id"]) == run_ids[-1]]
        asked = {r["fedcare"]["round"] for r in last_run if r["kind"] == "train"}
        assert asked == {int(row["round"]) for row in rows}, [  # answered or declined
            (r["kind"], r["outcome"], r["fedcare"], r.get("reason")) for r in last_run]
        logs[name] = verification.records
    return logs


def test_a_deployed_run_and_a_forced_second_one_are_in_every_hospitals_log(fedcare_cli,
                                                                           short_tmp_path):
    out = short_tmp_path / "d"
    first = _deploy(fedcare_cli, out)
    before = _check_logs(out, [first])

    second = _deploy(fedcare_cli, out, "--force")

    after = _check_logs(out, [first, second])
    for name in HOSPITALS:
        assert after[name][:len(before[name])] == before[name]  # appended, never rewritten
        first_run = [r for r in before[name] if r["event"] == "request"]
        assert any(r["outcome"] == "answered" for r in first_run)
    [previous] = list(out.glob("previous-*"))
    assert (previous / "run" / "metrics.csv").is_file()  # the first run, set aside
