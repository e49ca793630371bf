"""A hospital's round: budget enforcement, charge-before-release, and exact accounting."""

import json
from dataclasses import replace

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from client.local_round import train_round
from client.privacy import HospitalPrivacy
from client.training import get_trainer
from common.config import RunConfig
from common.dp.ledger import PrivacyLedger
from common.errors import LedgerError
from common.models import build_model
from common.tasks import get_task
from common.wire.modes import DpMode, NoiseMode
from server.federation import round_settings

TASK = get_task("heart-disease")
HOSPITALS = TASK.load(4)


def _request(server_round, *, run="run-a", rounds=3, mode="patient", **changes):
    """The round settings a server sends (the real wire type), with `changes` applied."""
    config = RunConfig.from_run_config({"num-server-rounds": rounds, "local-steps": 2})
    settings = replace(round_settings(config, run, server_round), dp_mode=DpMode(mode))
    if "min_contributors" in changes:
        changes["secagg_threshold"] = changes.pop("min_contributors")
    if "noise_mode" in changes:
        changes["noise_mode"] = NoiseMode(changes["noise_mode"])
    return replace(settings, **changes)


def _privacy(tmp_path, *, mode="patient", epsilon=1.0, seed=0):
    return HospitalPrivacy(mode, epsilon, 1e-5, "rdp", tmp_path / "va.json", seed)


def _round(request, privacy, index=3):
    weights = build_model(TASK, seed=0).get_weights()
    return train_round(request, hospital=HOSPITALS[index], hospital_index=index, privacy=privacy,
                       trainer=get_trainer(TASK), global_weights=weights)


def _opacus_epsilon(ledger_path, level):
    """Epsilon rebuilt independently: one accountant.step() per recorded step."""
    data = json.loads(ledger_path.read_text())
    accountant = RDPAccountant()
    for entry in data["entries"]:
        if entry["level"] == level:
            for _ in range(entry["steps"]):
                accountant.step(noise_multiplier=entry["noise_multiplier"],
                                sample_rate=entry["sample_rate"])
    return accountant.get_epsilon(delta=data["budget"]["delta"])


@pytest.mark.parametrize("mode", ["patient", "hospital"])
def test_reported_epsilon_equals_opacus_on_ledger_and_stays_in_budget(tmp_path, mode):
    privacy = _privacy(tmp_path, mode=mode)
    results = [_round(_request(r, mode=mode), privacy) for r in (1, 2, 3)]
    assert all(not r.declined and r.update is not None for r in results)
    reported = getattr(results[-1], f"epsilon_{mode}")
    assert reported == pytest.approx(_opacus_epsilon(privacy.ledger_path, mode), rel=1e-9)
    # Calibrated to spend (almost all of) the budget in 3 rounds; at hospital level the run's
    # final evaluation is one more release at the same z on the same track, kept in reserve.
    spent_by_rounds = 0.9 if mode == "patient" else 0.75
    assert spent_by_rounds < reported <= 1.0
    assert results[0].epsilon_patient < results[1].epsilon_patient or mode == "hospital"


def _ledger_keys(privacy):
    entries = json.loads(privacy.ledger_path.read_text())["entries"]
    return [(e["run"], e["round"]) for e in entries]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("mode", ["patient", "hospital"])
def test_repeated_request_resends_the_same_update_and_charges_once(tmp_path, mode):
    first = _round(_request(1, mode=mode), _privacy(tmp_path, mode=mode))
    # The server asks again for round 1 (it resumed from its checkpoint); the hospital process
    # restarted too, and in deployment its noise comes from OS entropy (no seed).
    unseeded = HospitalPrivacy(mode, 1.0, 1e-5, "rdp", tmp_path / "va.json", None)
    again = _round(_request(1, mode=mode), unseeded)
    assert first.update is not None and _same(first.update, again.update)
    assert again.epsilon_patient == first.epsilon_patient
    assert again.epsilon_hospital == first.epsilon_hospital
    assert _ledger_keys(unseeded) == [("run-a", 1)]


def test_repeat_with_other_weights_is_declined_not_recharged(tmp_path):
    privacy = _privacy(tmp_path)
    first = _round(_request(1), privacy)
    other = [w + 1 for w in build_model(TASK, seed=0).get_weights()]
    again = train_round(_request(1), hospital=HOSPITALS[3], hospital_index=3, privacy=privacy,
                        trainer=get_trainer(TASK), global_weights=other)
    assert first.update is not None
    assert again.update is None and "already charged" in again.declined
    assert _ledger_keys(privacy) == [("run-a", 1)]


def test_crash_after_charging_never_under_counts(tmp_path):
    privacy = _privacy(tmp_path)
    lost = _round(_request(1), privacy)  # the reply is lost: the process dies before sending
    reopened = PrivacyLedger.open(privacy.ledger_path, hospital="va", budget_epsilon=1.0,
                                  budget_delta=1e-5)
    assert len(reopened.entries) == 1 and reopened.epsilon_spent("patient") > 0
    # The saved release is gone too (disk trouble): a restarted process must not draw new noise.
    for saved in privacy.ledger_path.parent.glob("va.json.releases/*.npz"):
        saved.unlink()
    retry = _round(_request(1), _privacy(tmp_path))  # restarted process, same round
    assert lost.update is not None and retry.update is None
    assert _ledger_keys(privacy) == [("run-a", 1)]


def test_crash_after_saving_before_charging_charges_before_release(tmp_path, monkeypatch):
    privacy = _privacy(tmp_path)

    def crash(*args, **kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(PrivacyLedger, "charge", crash)
    with pytest.raises(OSError):
        _round(_request(1), privacy)
    monkeypatch.undo()
    assert PrivacyLedger.open(privacy.ledger_path, hospital="va", budget_epsilon=1.0,
                              budget_delta=1e-5).entries == ()
    retry = _round(_request(1), _privacy(tmp_path, seed=None))
    assert retry.update is not None and retry.epsilon_patient > 0
    assert _ledger_keys(privacy) == [("run-a", 1)]


def test_hospital_over_budget_declines_also_after_restart(tmp_path):
    privacy = _privacy(tmp_path, epsilon=1.0)
    for r in (1, 2, 3):
        assert _round(_request(r, run="run-a"), privacy).update is not None
    # A fourth round the plan did not include would overspend: declined, nothing charged.
    extra = _round(_request(4, run="run-a"), _privacy(tmp_path, epsilon=1.0))
    assert extra.update is None and "> budget 1" in extra.declined
    # A new run on the same data after a restart: the ledger on the hospital's disk is read.
    result = _round(_request(1, run="run-b", rounds=20), _privacy(tmp_path, epsilon=1.0))
    assert result.update is None and "already spent" in result.declined
    assert len(json.loads(privacy.ledger_path.read_text())["entries"]) == 3
    # Nothing the server asks can raise the stored budget: a higher budget is ignored.
    raised = _privacy(tmp_path, epsilon=100.0)
    assert _round(_request(1, run="run-c", rounds=20), raised).update is None


def test_hospital_declines_a_run_with_another_dp_mode(tmp_path):
    result = _round(_request(1, mode="none"), _privacy(tmp_path, mode="patient"))
    assert result.update is None and "applies dp mode 'patient'" in result.declined
    assert not (tmp_path / "va.json").exists()


def test_tampered_ledger_refuses_to_train(tmp_path):
    privacy = _privacy(tmp_path)
    _round(_request(1), privacy)
    data = json.loads(privacy.ledger_path.read_text())
    data["entries"][0]["noise_multiplier"] *= 10  # pretend more noise was added
    privacy.ledger_path.write_text(json.dumps(data))
    with pytest.raises(LedgerError):
        _round(_request(2), privacy)


def test_patient_update_bounded_by_update_clip(tmp_path):
    result = _round(_request(1, update_clipping_norm=0.01), _privacy(tmp_path))
    norm = np.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in result.update))
    assert norm <= 0.01 * (1 + 1e-6)


def test_non_private_round_reports_no_epsilon(tmp_path):
    result = _round(_request(1, mode="none"), _privacy(tmp_path, mode="none"))
    assert result.update is not None and result.epsilon_patient == 0.0
    assert not (tmp_path / "va.json").exists()


def test_distributed_noise_refused_without_secure_aggregation(tmp_path):
    request = _request(1, mode="hospital", noise_mode="distributed", min_contributors=3)
    result = _round(request, _privacy(tmp_path, mode="hospital"))
    assert result.update is None and "would not be private" in result.declined


def test_a_secure_round_asked_again_is_declined_not_resent(tmp_path):
    """A saved release never enters a second secure aggregation (two sums over overlapping
    sets give one hospital's update); a plain round asked again resends it.
    """
    from client.local_round import train_round

    request = _request(1, mode="patient", secagg_enabled=True, secagg_threshold=3)
    privacy = _privacy(tmp_path)
    weights = build_model(TASK, seed=0).get_weights()

    def ask():
        return train_round(request, hospital=HOSPITALS[3], hospital_index=3, privacy=privacy,
                           trainer=get_trainer(TASK), global_weights=weights,
                           secure_aggregation=True)

    first, again = ask(), ask()
    assert first.update is not None
    assert again.update is None and "never put into a second one" in again.declined
