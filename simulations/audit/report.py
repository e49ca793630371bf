"""``audit.md``, ``audit.json`` and the ROC plots of one ``fedcare audit``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from simulations.audit.canaries import OneRunAudit
from simulations.audit.experiment import ArmResult, AuditPlan, AuditResult
from simulations.audit.lower_bound import canaries_needed, eps_lower_bound
from simulations.audit.membership import DEFAULT_FPRS, dp_tpr_bound
from simulations.audit.plots import save_roc_plot

__all__ = ["power_requirements", "verdict", "write_audit"]

MAX_CANARIES_SEARCHED = 100_000
LOWEST_CONFIDENCE = 0.5  # below this a "bound" is a coin toss: never suggested


def _eps(value: float) -> str:
    return "∞ (none)" if not math.isfinite(value) else f"{value:.2f}"


def _name(plan: AuditPlan, index: int) -> str:
    from common.tasks import get_task

    return get_task(plan.config.task).hospital_names(plan.config.hospitals)[index]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def verdict(result: AuditResult) -> str:
    """One sentence: violation, not private, no power (and what power takes), or consistent."""
    dp, control = result.dp, result.control
    if dp.config.private and dp.epsilon_lower_bound > dp.accounted_epsilon:
        return (f"VIOLATION: the audit proves epsilon > {dp.epsilon_lower_bound:.2f} at "
                f"{_pct(result.plan.confidence)} confidence, above the accounted "
                f"{dp.accounted_epsilon:.2f}: the run leaks more than its accountant says")
    if not dp.config.private:
        return "the audited run is not private: both arms are controls"
    if not result.has_power:
        return (f"NO POWER: the non-private control proves only epsilon > "
                f"{control.epsilon_lower_bound:.2f}, not more than the accounted "
                f"{dp.accounted_epsilon:.2f} of the run it controls, so this audit could not "
                "have told this run from one with no DP at all; its DP figures say nothing "
                "about the run. " + power_requirements(
                    dp.accounted_epsilon, canaries=result.plan.canaries,
                    confidence=result.plan.view_confidence, delta=dp.config.dp_delta,
                    ceiling=control.ceiling))
    return (f"consistent: the bound {dp.epsilon_lower_bound:.2f} does not exceed the accounted "
            f"{dp.accounted_epsilon:.2f}, and the control proves more than that "
            f"({control.epsilon_lower_bound:.2f}), so the audit had power")


def power_requirements(accounted: float, *, canaries: int, confidence: float, delta: float,
                       ceiling: float) -> str:
    """What a control would need to prove more than ``accounted`` (one sentence).

    The canaries a perfect attack (every canary guessed, every guess right) needs at
    ``confidence`` (each view's) and ``delta`` (``canaries_needed``), and the highest
    confidence at which the ``canaries`` used, all guessed right, would get there (none at or
    above 50%: said so). ``ceiling`` is what these canaries prove with every guess right.
    """
    needed = canaries_needed(accounted, confidence, delta, max_canaries=MAX_CANARIES_SEARCHED)
    count = (f"at least {needed:,} canaries (here {canaries}) with every guess right"
             if needed is not None else
             f"more canaries than any count up to {MAX_CANARIES_SEARCHED:,} can give (beyond "
             "about epsilon 8 the delta term outgrows the binomial tail)")
    reach = _confidence_reaching(accounted, canaries, confidence, delta)
    lower = (f"; or, with these {canaries} canaries all guessed right, a confidence of at most "
             f"{_pct(reach)}" if reach is not None else
             f"; no confidence of {_pct(LOWEST_CONFIDENCE)} or more lets these {canaries} "
             "canaries get there")
    return (f"Power here takes a control bound above {accounted:.2f}: at "
            f"{_pct(confidence)} confidence per view, {count}{lower} (these canaries prove at "
            f"most {ceiling:.2f} even with every guess right)")


def _confidence_reaching(target: float, m: int, confidence: float, delta: float
                         ) -> float | None:
    """Return the highest confidence at which m canaries, all guessed right, prove > target.

    Searched in [LOWEST_CONFIDENCE, confidence]; None if even the lowest does not reach it.
    """
    if eps_lower_bound(m, m, m, LOWEST_CONFIDENCE, delta) <= target:
        return None
    low, high = LOWEST_CONFIDENCE, confidence
    if eps_lower_bound(m, m, m, high, delta) > target:
        return high
    for _ in range(30):  # the bound falls as the confidence rises
        middle = (low + high) / 2
        low, high = (middle, high) if eps_lower_bound(m, m, m, middle, delta) > target \
            else (low, middle)
    return low


def _view_cell(audit: OneRunAudit) -> str:
    best = audit.outcomes[audit.best_index]
    return f"{audit.epsilon:.2f} ({best.v}/{best.r})"


def _table(result: AuditResult) -> list[str]:
    lines = [
        "| run | accounted ε | bound: server view | bound: final-model view | bound | "
        "ceiling | loss AUC | LiRA AUC | LiRA TPR@0.1% | LiRA TPR@1% | LiRA TPR@5% | "
        "DP bound TPR@1% |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in result.arms:
        lira = arm.mia["lira"]
        bound_1 = (f"{_pct(dp_tpr_bound(0.01, arm.accounted_epsilon, arm.config.dp_delta))}"
                   if math.isfinite(arm.accounted_epsilon) else "1 (none)")
        tprs = [_pct(lira.tpr_at_fpr[f]) for f in DEFAULT_FPRS]
        lines.append(
            f"| {arm.name} (dp {arm.config.dp_mode.value}) | {_eps(arm.accounted_epsilon)} | "
            f"{_view_cell(arm.views['server'])} | {_view_cell(arm.views['final_model'])} | "
            f"**{arm.epsilon_lower_bound:.2f}** | {arm.ceiling:.2f} | "
            f"{arm.mia['loss'].auc:.3f} | {lira.auc:.3f} | {' | '.join(tprs)} | {bound_1} |")
    return lines


def _settings(result: AuditResult) -> list[str]:
    plan, config = result.plan, result.plan.config
    lines = [
        f"- task {config.task}, {config.hospitals} hospitals, {config.num_server_rounds} rounds, "
        f"seed {config.seed}, partition {config.partition.value}",
        f"- dp {config.dp_mode.value}"
        + (f" (noise {config.dp_noise_mode.value})" if config.dp_mode.value == "hospital" else "")
        + f", budget epsilon {config.dp_epsilon:g}, delta {config.dp_delta:g}, clip "
        f"{config.dp_clipping_norm:g}, accountant {config.dp_accountant.value}",
        f"- local: {config.local_epochs} epoch(s) / {config.local_steps} steps, batch "
        f"{config.batch_size}, learning rate {config.learning_rate:g}",
        f"- {plan.canaries} canary records (kind {plan.canary_kind}) in the training rows of "
        f"{_name(plan, plan.canary_hospital)} (the hospital with the fewest), "
        f"{result.inclusion.n_in} included (coins seeded by {result.inclusion.seed})",
    ]
    if result.hospital_inclusion is not None:
        lines.append(f"- {plan.canaries} canary hospitals, {result.hospital_inclusion.n_in} "
                     f"included (coins seeded by {result.hospital_inclusion.seed})")
    lines += [
        f"- confidence {_pct(plan.confidence)} (each view at {_pct(plan.view_confidence)}; each "
        "view's 4 guessing rules Bonferroni-corrected within it)",
        f"- membership inference on {_name(plan, plan.mia_hospital)}'s rows, {plan.shadows} shadow "
        "federations per arm",
    ]
    return lines


def _explanation(result: AuditResult) -> list[str]:
    dp = result.dp
    needed = (canaries_needed(dp.accounted_epsilon, result.plan.view_confidence,
                              dp.config.dp_delta, max_canaries=MAX_CANARIES_SEARCHED)
              if dp.config.private and math.isfinite(dp.accounted_epsilon)
              and dp.accounted_epsilon > 0 else None)
    reach = (f"Proving the accounted epsilon {dp.accounted_epsilon:.2f} with a perfect attack "
             f"would need {needed:,} canaries." if needed is not None else
             "No feasible canary count proves the accounted epsilon (beyond about 8 the delta "
             "term outgrows the binomial tail)." if dp.config.private else "")
    hospital = result.hospital_inclusion is not None
    server = ("the canary hospitals' own releases (fake hospitals that run fedcare's "
              "hospital-level calibration, clipping and noise on a crafted update of norm C "
              "in a random direction), projected on their directions and summed over rounds"
              if hospital else
              f"{_name(result.plan, result.plan.canary_hospital)}'s released update each round, "
              "projected on each canary's first push (its descent direction at the public "
              "initial model: one canary per feature axis, labelled against that model) and "
              "summed over rounds"
              if result.records.kind == "axis" else
              f"{_name(result.plan, result.plan.canary_hospital)}'s released update each round, "
              "against each canary's clipped gradient at that round's global weights "
              "(least-squares coefficients, the hospital's other rows known to the attacker, "
              "as DP allows), summed over rounds")
    return [
        "## What this audit shows",
        "",
        f"- **Releases covered**: {AUDITED_RELEASES}",
        "- **Lower bound** (Steinke, Nasr, Jagielski, NeurIPS 2023, one run): each canary was "
        "included with probability 1/2; an attacker guessed \"in\" for the highest scores and "
        "\"out\" for the lowest. The number of right guesses proves, at the stated confidence, "
        "that the run is *not* (ε', δ)-DP for any ε' below the bound. A bound above the "
        "accounted ε is a bug (in the noise, the sampling, the clipping or the accounting). "
        "Cells show the bound and the right guesses / guesses of its best rule.",
        f"- **Server view**: {server}. **Final-model view**: each canary record's gain in "
        "confidence in its (random) label from the public initial model to the final model.",
        "- **Ceiling**: the bound these canaries would give if every guess were right; an "
        "accounted ε above it cannot be reached by this audit. " + reach,
        "- **Control**: the same run without DP. Its bound must exceed the accounted ε of "
        "the run it controls; otherwise the audit had no power: it could not have told that "
        "run from one without any DP, whatever its own bound.",
        f"- **Membership inference** on {_name(result.plan, result.plan.mia_hospital)}'s real "
        "rows "
        "(its training rows against its held-out test rows): the loss-threshold attack and "
        "online LiRA (Carlini et al. 2022) with shadow federations; TPR at low FPR next to "
        "the bound e^ε·FPR + δ that the accounted (ε, δ) implies (the dashed line of the "
        "plots). With n held-out rows, FPRs below 1/n are not resolved, and these curves "
        "are estimates without confidence intervals: near FPR 1/n a curve can cross the "
        "dashed line by chance (the k highest of N scores all belong to members with "
        "probability about (members / N)^k even when the attack is blind). Only the canary "
        "bound is a statistical test.",
        "",
        "## What it does not show",
        "",
        "- A bound below the accounted ε does **not** prove the run is private: it is a lower "
        "bound, and this attack is one of many. Only the accountant gives an upper bound.",
        "- One run at these sizes has little power: a subtler bug (for example a sample rate "
        "halved, which changes the accounted ε by far less than the gap between the bound and "
        "ε) goes unseen; only gross failures (noise missing or far too small) are caught.",
        "- The canaries are chosen to be easy to detect (far from the data, random labels); "
        "real patients' records are less exposed, as the membership-inference figures show.",
        "- It audits the simulated code path (fedcare's own client and server code in one "
        "process), not a deployment's configuration or transport.",
    ]


AUDITED_RELEASES = (
    "the training track: the training updates the server sees each round and the final model "
    "built from them. Not audited: the evaluation releases (the test track; accounted and "
    "charged like the updates, see docs/privacy.md) and anything the hospitals release outside "
    "these runs.")


def write_audit(result: AuditResult, out_dir: Path) -> tuple[Path, Path]:
    """Write ``audit.md``, ``audit.json`` and ``roc-dp.png``, ``roc-control.png``."""
    plan = result.plan
    plots = {}
    for arm in result.arms:
        path = out_dir / f"roc-{arm.name}.png"
        eps = arm.accounted_epsilon if math.isfinite(arm.accounted_epsilon) else None
        save_roc_plot(path, {"loss threshold": arm.mia_scores["loss"],
                             "LiRA": arm.mia_scores["lira"]},
                      eps, arm.config.dp_delta,
                      f"{arm.name}: {plan.config.task}, dp {arm.config.dp_mode.value}")
        plots[arm.name] = path.name
    text = [
        f"# Privacy audit: {plan.config.task}, dp {plan.config.dp_mode.value}",
        "",
        f"**{verdict(result)}.**",
        "",
        *_table(result),
        "",
        *[f"![ROC of the {name} run]({file})" for name, file in plots.items()],
        "",
        "## Settings",
        "",
        *_settings(result),
        "",
        *_explanation(result),
        "",
    ]
    md = out_dir / "audit.md"
    md.write_text("\n".join(text), encoding="utf-8")
    js = out_dir / "audit.json"
    js.write_text(json.dumps(audit_document(result, plots), indent=1), encoding="utf-8")
    return md, js


def _arm(arm: ArmResult) -> dict[str, Any]:
    return arm.to_dict()


def audit_document(result: AuditResult, plots: dict[str, str]) -> dict[str, Any]:
    """Every figure of the audit, JSON-able (infinite epsilons as null)."""
    plan = result.plan
    return {
        "verdict": verdict(result),
        "has_power": result.has_power,
        # Power: the control's bound must exceed the audited run's accounted epsilon.
        "control_must_exceed": (result.dp.accounted_epsilon
                                if math.isfinite(result.dp.accounted_epsilon) else None),
        "confidence": plan.confidence,
        "view_confidence": plan.view_confidence,
        "settings": plan.config.to_run_config(),
        "canaries": {
            "m": plan.canaries,
            "kind": plan.canary_kind,
            "hospital": plan.canary_hospital,
            "hospital_name": _name(plan, plan.canary_hospital),
            "records": result.records.to_dict(),
            "inclusion": result.inclusion.to_dict(),
            "hospital_inclusion": (result.hospital_inclusion.to_dict()
                                   if result.hospital_inclusion is not None else None),
        },
        "membership_inference": {"hospital": plan.mia_hospital,
                                 "hospital_name": _name(plan, plan.mia_hospital),
                                 "shadows": plan.shadows},
        "arms": {arm.name: _arm(arm) for arm in result.arms},
        "plots": plots,
    }
