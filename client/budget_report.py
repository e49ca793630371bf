"""The page a hospital's data-protection officer reads: its ledger and disclosure log as HTML.

``render_report`` turns a ledger (read-only) and its verified disclosure log into one
self-contained HTML document: inline CSS, inline SVG (a gauge per budget, the spending over
time), no script, no external style, font or image, so it opens with no network. It shows
the budget per track, the spending over time, each run with its rounds, what left and the
epsilon charged, every decline with its reason, the budget's history, the chain's
verification, and the privacy statement in plain words with what it does not cover.

Every figure is one the ledger recorded when it charged (computed by Opacus then) or one the
log recorded: nothing here imports an accountant, TensorFlow or Flower.
"""

import html
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from common.dp.disclosure_log import Verification, utc_now

if TYPE_CHECKING:
    from common.dp.ledger import PrivacyLedger

TRACKS = (("train", "training rows", "patient level"), ("test", "test rows", "patient level"),
          ("hospital", "whole hospital", "hospital level"))
_COLOURS = {"train": "#1f6feb", "test": "#8250df", "hospital": "#bf8700"}
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1f2328;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
.muted{color:#59636e;font-size:.9rem}.ok{background:#dafbe1;border:1px solid #4ac26b}
.bad{background:#ffebe9;border:1px solid #ff8182}.box{padding:.6rem 1rem;border-radius:6px;
margin:.5rem 0}.gauges{display:flex;gap:1.5rem;flex-wrap:wrap}
.gauge{border:1px solid #d0d7de;border-radius:6px;padding:.5rem 1rem;text-align:center}
table{border-collapse:collapse;width:100%;font-size:.88rem;margin:.5rem 0}
th,td{border:1px solid #d0d7de;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.declined{color:#a40e26}.statement li{margin:.25rem 0}code{font-size:.85em}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _eps(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return "unbounded"
    return f"{value:.3f}"


@dataclass(frozen=True, slots=True)
class TrackFigure:
    """One budget as the gauge shows it: epsilon spent (inf: unbounded) against the budget."""

    key: str
    title: str
    level: str
    spent: float
    budget: float
    delta: float


def track_figures(ledger: "PrivacyLedger") -> list[TrackFigure]:
    """Spent and budget per track, from the figures the ledger recorded with its last entry."""
    after = ledger.recorded_figures
    spent = {"train": 0.0, "test": 0.0, "hospital": 0.0}
    if after is not None:
        spent = {"train": after.patient, "test": after.test or 0.0, "hospital": after.hospital}
    budgets = {"train": (ledger.budget_epsilon, ledger.budget_delta),
               "test": (ledger.test_budget_epsilon, ledger.test_budget_delta),
               "hospital": (ledger.budget_epsilon, ledger.budget_delta)}
    return [TrackFigure(key, title, level, spent[key], *budgets[key])
            for key, title, level in TRACKS]


def gauge_svg(figure: TrackFigure) -> str:
    """A half-circle gauge (inline SVG) of ``figure.spent`` out of ``figure.budget``."""
    share = 1.0 if math.isinf(figure.spent) else min(1.0, figure.spent / figure.budget)
    angle = math.pi * (1.0 - share)
    x, y = 100 + 80 * math.cos(angle), 100 - 80 * math.sin(angle)
    colour = "#cf222e" if share >= 0.9 else _COLOURS[figure.key]
    arc = ("" if share <= 0 else
           f'<path d="M20,100 A80,80 0 0,1 {x:.2f},{y:.2f}" fill="none" stroke="{colour}" '
           'stroke-width="18"/>')
    label = f"{_eps(figure.spent)} of {figure.budget:g}"
    size = 13 if math.isinf(figure.spent) else 16
    return (f'<svg role="img" aria-label="{_e(figure.title)}: epsilon {_e(label)}" '
            'width="200" height="120" viewBox="0 0 200 120" xmlns="http://www.w3.org/2000/svg">'
            '<path d="M20,100 A80,80 0 0,1 180,100" fill="none" stroke="#eaeef2" '
            f'stroke-width="18"/>{arc}<text x="100" y="92" text-anchor="middle" '
            f'font-size="{size}" font-weight="600">{_e(label)}</text></svg>')


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def spending_points(records: Iterable[dict[str, Any]]) -> dict[str, list[tuple[datetime, float]]]:
    """Epsilon after each release charged by a logged request, per track, in time order."""
    points: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for record in records:
        when = _parse_time(record.get("time"))
        if record.get("event") != "request" or when is None:
            continue
        for release in record.get("releases") or []:
            after = release.get("epsilon_after") or {}
            if release.get("charged") != "this request":
                continue
            for key in ("train", "test", "hospital"):
                value = after.get(key)
                if isinstance(value, int | float):
                    points[key].append((when, float(value)))
    return dict(points)


def spending_svg(points: dict[str, list[tuple[datetime, float]]],
                 budgets: Sequence[TrackFigure]) -> str:
    """A step chart (inline SVG) of epsilon spent per track over time, budgets dashed."""
    series = {key: values for key, values in points.items() if any(v > 0 for _, v in values)}
    if not series:
        return '<p class="muted">No release charged by a logged request yet.</p>'
    width, height, left, bottom = 960, 240, 60, 40
    times = [when.timestamp() for values in series.values() for when, _ in values]
    t0, t1 = min(times), max(times)
    span = (t1 - t0) or 1.0
    top = max([v for values in series.values() for _, v in values]
              + [f.budget for f in budgets if f.key in series]) * 1.1

    def xy(when: float, value: float) -> tuple[float, float]:
        return (left + (when - t0) / span * (width - left - 20),
                height - bottom - value / top * (height - bottom - 20))

    parts = [f'<svg role="img" aria-label="epsilon spent over time" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" '
             'xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
             'stroke="#59636e"/>',
             f'<line x1="{left}" y1="10" x2="{left}" y2="{height - bottom}" stroke="#59636e"/>']
    for tick in range(5):
        value = top * tick / 4
        _, y = xy(t0, value)
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{value:.2f}</text>')
    for figure in budgets:
        if figure.key in series:
            _, y = xy(t0, figure.budget)
            parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 20}" y2="{y:.1f}" '
                         f'stroke="{_COLOURS[figure.key]}" stroke-dasharray="6 4"/>')
    for key, values in series.items():
        coords, last = [], 0.0
        for when, value in values:
            coords += [xy(when.timestamp(), last), xy(when.timestamp(), value)]
            last = value
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{_COLOURS[key]}" '
                     'stroke-width="2"/>')
    shape = "%Y-%m-%d %H:%M:%S UTC" if span < 86400 else "%Y-%m-%d %H:%M UTC"
    for label, stamp_at in (("first", t0), ("last", t1)):
        x, _ = xy(stamp_at, 0.0)
        stamp = datetime.fromtimestamp(stamp_at, UTC).strftime(shape)
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 18}" font-size="11" '
                     f'text-anchor="{"start" if label == "first" else "end"}">{_e(stamp)}</text>')
    legend = " ".join(f'<tspan fill="{_COLOURS[key]}">&#9632; {_e(title)}</tspan>'
                      for key, title, _ in TRACKS if key in series)
    parts.append(f'<text x="{left + 10}" y="24" font-size="12">{legend} '
                 '<tspan fill="#59636e">(dashed: budget)</tspan></text></svg>')
    return "".join(parts)


def sent_summary(sent: dict[str, Any] | None) -> str:
    """What a reply carried, in words: each record's fields and sizes (never a value)."""
    if not sent:
        return "nothing (an error reply: no content)"
    parts = []
    for record in sent.get("records", []):
        fields = record.get("fields", [])
        size = sum(int(f.get("bytes", 0)) for f in fields)
        arrays = [f for f in fields if f.get("type") == "array"]
        if arrays:
            shapes = ", ".join("x".join(str(n) for n in f.get("shape", [])) or "scalar"
                               for f in arrays)
            dtypes = ", ".join(sorted({str(f.get("dtype")) for f in arrays}))
            parts.append(f"{record.get('name')}: {len(arrays)} arrays [{shapes}] {dtypes}"
                         f" ({size} B)")
        else:
            names = ", ".join(str(f.get("name")) for f in fields)
            parts.append(f"{record.get('name')}: {names} ({size} B)")
    return "; ".join(parts) + f" - {sent.get('bytes', 0)} B in all"


def _charged_now(record: dict[str, Any]) -> dict[str, float]:
    """Epsilon charged by this request per track (summed over its releases)."""
    out: dict[str, float] = {}
    for release in record.get("releases") or []:
        charged = release.get("epsilon_charged") or {}
        if release.get("charged") != "this request":
            continue
        for key in ("train", "test", "hospital"):
            value = charged.get(key)
            if isinstance(value, int | float) and value > 0:
                out[key] = out.get(key, 0.0) + float(value)
    return out


def _charged_text(record: dict[str, Any]) -> str:
    charged = _charged_now(record)
    earlier = [r for r in record.get("releases") or [] if r.get("charged") == "earlier"]
    text = ", ".join(f"{key} {value:.3f}" for key, value in charged.items())
    if not text and earlier:
        text = "charged earlier (same release)"
    return text or "-"


def runs_section(records: Sequence[dict[str, Any]]) -> str:
    """One table per fedcare run: each request with its round, outcome, what left, epsilon."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("event") == "request":
            runs[str((record.get("fedcare") or {}).get("run_id"))].append(record)
    if not runs:
        return '<p class="muted">No request recorded yet.</p>'
    out = []
    for run_id, requests in runs.items():
        flower = sorted({str((r.get("flower") or {}).get("run_id")) for r in requests})
        rounds = sorted({int((r.get("fedcare") or {}).get("round") or 0) for r in requests})
        total: dict[str, float] = defaultdict(float)
        for record in requests:
            for key, value in _charged_now(record).items():
                total[key] += value
        spent = ", ".join(f"{key} {value:.3f}" for key, value in total.items()) or "none"
        out.append(f"<h3>Run {_e(run_id)}</h3><p class=\"muted\">Flower run id "
                   f"{_e(', '.join(flower))}; rounds {_e(_ranges(rounds))}; "
                   f"{len(requests)} requests; epsilon charged: {_e(spent)}</p>")
        rows = "".join(_request_row(record) for record in requests)
        out.append("<table><tr><th>time (UTC)</th><th>round</th><th>request</th>"
                   "<th>outcome</th><th>what left</th><th>epsilon charged</th></tr>"
                   f"{rows}</table>")
    return "".join(out)


def _request_row(record: dict[str, Any]) -> str:
    kind = str(record.get("kind", ""))
    if record.get("stage"):
        kind += f" ({record['stage']})"
    outcome = str(record.get("outcome", ""))
    css = ' class="declined"' if outcome != "answered" else ""
    return (f"<tr><td>{_e(record.get('time', ''))}</td>"
            f"<td class=\"num\">{_e((record.get('fedcare') or {}).get('round', ''))}</td>"
            f"<td>{_e(kind)}</td><td{css}>{_e(outcome)}</td>"
            f"<td>{_e(sent_summary(record.get('sent')))}</td>"
            f"<td>{_e(_charged_text(record))}</td></tr>")


def _ranges(numbers: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` as ``1-3, 5``."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) or "-"


def declines_section(records: Sequence[dict[str, Any]]) -> str:
    """Every declined (or failed) request with its reason."""
    rows = [record for record in records
            if record.get("event") == "request" and record.get("outcome") != "answered"]
    if not rows:
        return '<p class="muted">No request was declined.</p>'
    body = "".join(
        f"<tr><td>{_e(r.get('time', ''))}</td>"
        f"<td>{_e((r.get('fedcare') or {}).get('run_id', ''))}</td>"
        f"<td class=\"num\">{_e((r.get('fedcare') or {}).get('round', ''))}</td>"
        f"<td>{_e(r.get('kind', ''))}</td><td class=\"declined\">{_e(r.get('outcome', ''))}</td>"
        f"<td>{_e(r.get('reason', ''))}</td></tr>" for r in rows)
    return ("<table><tr><th>time (UTC)</th><th>run</th><th>round</th><th>request</th>"
            f"<th>outcome</th><th>reason</th></tr>{body}</table>")


def budget_history_section(records: Sequence[dict[str, Any]]) -> str:
    """The budget's records: created, first seen, lowered (never rewritten in the log)."""
    rows = [record for record in records if str(record.get("event", "")).startswith("budget")]
    if not rows:
        return '<p class="muted">No budget record yet.</p>'
    body = []
    for record in rows:
        budget = record.get("budget") or {}
        before = record.get("previous_budget") or {}
        change = (f"from epsilon {before.get('epsilon')} (delta {before.get('delta')}; test "
                  f"{before.get('test_epsilon')})" if before else "")
        body.append(f"<tr><td>{_e(record.get('time', ''))}</td><td>{_e(record.get('event'))}"
                    f"</td><td>epsilon {_e(budget.get('epsilon'))}, delta "
                    f"{_e(budget.get('delta'))}; test rows epsilon "
                    f"{_e(budget.get('test_epsilon'))}, delta {_e(budget.get('test_delta'))}"
                    f"</td><td>{_e(change)}</td>"
                    f"<td>{_e(record.get('by') or record.get('cause') or '')}</td></tr>")
    return ("<table><tr><th>time (UTC)</th><th>record</th><th>budget</th><th>before</th>"
            f"<th>by</th></tr>{''.join(body)}</table>")


@dataclass(frozen=True, slots=True)
class Checks:
    """What was verified: the ledger against its head file, the log against its chain and
    anchor (``ledger_problem``: why the ledger could not be read, else None).
    """

    ledger_problem: str | None
    ledger_line: str
    log: Verification

    @property
    def ok(self) -> bool:
        """Whether both hold."""
        return self.ledger_problem is None and self.log.ok


def checks_section(checks: Checks) -> str:
    """The verification's result: a green box when everything holds, else red with why."""
    css = "ok" if checks.ok else "bad"
    verdict = ("Verified: the ledger matches its head file and the disclosure log's hash chain "
               "and anchor hold." if checks.ok else
               "NOT VERIFIED: the files below were changed, truncated, replaced or restored "
               "from an older copy. Do not rely on this page; ask the hospital's administrator.")
    ledger = checks.ledger_problem or checks.ledger_line
    return (f'<div class="box {css}" id="verification"><strong>{_e(verdict)}</strong>'
            f"<ul><li>ledger: {_e(ledger)}</li><li>{_e(checks.log.summary())}</li></ul></div>")


def statement_section(ledger: "PrivacyLedger", figures: Sequence[TrackFigure]) -> str:
    """The privacy statement in plain words, and what it does not cover."""
    by_key = {f.key: f for f in figures}
    train, test, hospital = by_key["train"], by_key["test"], by_key["hospital"]
    if ledger.tracks_parallel:
        patient = max(train.spent, test.spent)
        tracks = ("Training rows and test rows are different patients (the split was fixed "
                  "before anything left), so a patient's epsilon is the larger of the two: "
                  f"{_eps(patient)}.")
    else:
        tracks = ("The split between training and test rows was not fixed before the first "
                  "release, so the two tracks add up for a patient: at most "
                  f"{_eps(train.spent + test.spent)}.")
    level = ("Hospital level: unbounded, because patient-level releases protect single "
             "records, not a whole hospital's data." if math.isinf(hospital.spent) else
             f"Hospital level (the whole data set, both tracks): epsilon {_eps(hospital.spent)} "
             f"of {hospital.budget:g}.")
    covered = [
        "Epsilon bounds how much any one patient's record can change what this hospital "
        "sent: whoever sees everything that left (the coordinating server included, whatever "
        "it does) cannot tell whether a given patient's record was used better than odds "
        f"moved by a factor of e<sup>&epsilon;</sup>, except with probability delta "
        f"({train.delta:g}). Smaller is more private; 1 is strong, 8 is weak.",
        f"Training rows: epsilon {_eps(train.spent)} spent of the hospital's own budget "
        f"{train.budget:g}. Test rows (evaluation): {_eps(test.spent)} of {test.budget:g}. "
        + tracks,
        level,
        "The budget is the hospital's: set with <code>fedcare budget init</code> and only "
        "ever lowered by its node config; no server setting can raise it. A request that "
        "would exceed it is declined before anything is computed.",
    ]
    not_covered = [
        "That this hospital took part, when, how long it took, and why it declined (the "
        "reasons above are sent as text).",
        "Under differential privacy the epsilon a hospital reports depends on its number of "
        "rows (through the sample rate); without DP, row counts and training loss are sent.",
        "Anything that left outside fedcare (other software, exports, people).",
        "A reset by the hospital's own administrator: rewriting or deleting the ledger, its "
        "head file and this log together cannot be detected from these files alone (keep "
        "the head file with another party; see the ledger page).",
        "Code other than the one whose digest each record names; under distributed noise, "
        "fewer honest hospitals than the run assumed.",
        "The hospital's own model and its exact metrics stay at the hospital and are not "
        "covered because they never leave.",
    ]
    return ('<div class="statement"><h3>What the guarantee says</h3><ul>'
            + "".join(f"<li>{item}</li>" for item in covered)
            + "</ul><h3>What it does not cover</h3><ul>"
            + "".join(f"<li>{_e(item)}</li>" for item in not_covered) + "</ul></div>")


def render_report(ledger: "PrivacyLedger", checks: Checks, *, generated: str) -> str:
    """The whole page (one HTML document, no external resource), for ``ledger``'s hospital.

    ``generated`` is the UTC time the page states it was made at.
    """
    figures = track_figures(ledger)
    records = checks.log.records
    gauges = "".join(
        f'<div class="gauge"><div><strong>{_e(f.title)}</strong> '
        f'<span class="muted">({_e(f.level)})</span></div>{gauge_svg(f)}'
        f'<div class="muted">remaining {_eps(max(0.0, f.budget - f.spent))}; delta {f.delta:g}'
        "</div></div>" for f in figures)
    sections = [
        ("Verification", checks_section(checks)),
        ("Budget per track", f'<div class="gauges">{gauges}</div>'),
        ("Spending over time", spending_svg(spending_points(records), figures)),
        ("Privacy statement", statement_section(ledger, figures)),
        ("Runs: what left, and at what cost", runs_section(records)),
        ("Declined requests", declines_section(records)),
        ("Budget history", budget_history_section(records)),
    ]
    body = "".join(f'<h2 id="{_e(title.split(":")[0].lower().replace(" ", "-"))}">{_e(title)}'
                   f"</h2>{content}" for title, content in sections)
    digests = sorted({str(r["code_sha256"]) for r in records if r.get("code_sha256")})
    code = ", ".join(d[:16] for d in digests) or "none recorded"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Disclosures of {_e(ledger.hospital)}</title><style>{_CSS}</style></head>"
            f"<body><h1>What left {_e(ledger.hospital)}, when, and at what privacy cost</h1>"
            f'<p class="muted">Generated {_e(generated)} from the ledger {_e(ledger.path)} and '
            f"its disclosure log; code digests seen: {_e(code)}. This page needs no network."
            f"</p>{body}</body></html>\n")


def generated_now() -> str:
    """The time stamp a page states (UTC)."""
    return utc_now()
