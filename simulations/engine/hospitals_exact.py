"""A simulation's table of what every hospital got: exact, simulation-only.

In deployment each hospital's report (``client.hospital_report``: global, personal,
local-only and majority-class figures on its own test rows) stays beside its ledger and the
server never sees it. In a simulation the researcher owns every hospital's data and the
simulated ledgers live in the run directory, so ``fedcare simulate`` gathers those reports
into ``hospitals_exact.csv`` and a section of ``report.md``, labelled exact and
simulation-only: nothing in them was released, and none of it is differentially private.
"""

import csv
import json
import math
import os
from pathlib import Path

TABLE = "hospitals_exact.csv"
SECTION = "## Each hospital's exact figures (simulation only)"
LABEL = "exact, simulation only"
METRICS = ("accuracy", "balanced_accuracy", "auc", "mae", "r2")


def run_id_of(run_dir: Path) -> str:
    """The run's id from config.json ('' when unreadable)."""
    try:
        value = json.loads((run_dir / "config.json").read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return ""
    return str(value or "")


def gather_rows(run_dir: Path) -> list[dict[str, str]]:
    """Every simulated hospital's report rows of this run (``ledgers/*.report.csv``), sorted
    by hospital; rows of another run (a reused directory's) are left out.
    """
    run_id = run_id_of(run_dir)
    rows: list[dict[str, str]] = []
    for path in sorted((run_dir / "ledgers").glob("*.report.csv")):
        with open(path, newline="", encoding="utf-8") as handle:
            rows += [row for row in csv.DictReader(handle)
                     if not run_id or row.get("run") == run_id]
    return rows


def _cell(text: str | None) -> str:
    try:
        value = float(text or "nan")
    except ValueError:
        return str(text)
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def section_lines(rows: list[dict[str, str]]) -> list[str]:
    """The report.md section: one table row per hospital and predictor."""
    metrics = [m for m in METRICS if m in rows[0]]
    lines = [SECTION, "",
             "Exact figures on each hospital's own test rows, for the researcher's eyes only: "
             "in deployment they stay at each hospital (its `<ledger>.report.md`), none of "
             "them is differentially private, and the personal and local-only models are "
             "trained without DP. global: the federation's final model; personal: it with "
             "the hospital's own intercept, fitted on its training rows where a validation "
             "split of them favoured it; local_only: its rows alone; majority: always its "
             "training rows' most frequent class. Also in " + f"`{TABLE}`.", "",
             "| hospital | n test | model | " + " | ".join(metrics) + " |",
             "|---" * (len(metrics) + 3) + "|"]
    lines += [f"| {r['hospital']} | {r['test_rows']} | {r['model']} | "
              + " | ".join(_cell(r.get(m)) for m in metrics) + " |" for r in rows]
    return [*lines, ""]


def write_hospitals_exact(run_dir: Path) -> Path | None:
    """Write ``hospitals_exact.csv`` and its report.md section; None when no hospital wrote a
    report (e.g. a run stopped before its final model). Rewrites both each time.
    """
    rows = gather_rows(run_dir)
    if not rows:
        return None
    path = run_dir / TABLE
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["figures", *rows[0]])
        writer.writeheader()
        writer.writerows({"figures": LABEL, **row} for row in rows)
    os.replace(tmp, path)
    report = run_dir / "report.md"
    if report.is_file():
        text = report.read_text(encoding="utf-8")
        kept = text.split(SECTION)[0].rstrip("\n")
        report.write_text(kept + "\n\n" + "\n".join(section_lines(rows)), encoding="utf-8")
    return path
