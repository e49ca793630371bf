"""The consortium report's first lines: the DP aggregates with their intervals, the worst
hospital where a per-hospital DP figure exists (not under secure aggregation), and the
hospitals that declined every round.
"""

from common.tasks import get_task
from server.report import headline_lines

TASK = get_task("heart-disease")
HOSPITALS = ["cleveland", "hungary", "switzerland", "va"]
FINAL = {"client_avg_accuracy": "0.72", "client_avg_accuracy_low": "0.60",
         "client_avg_accuracy_high": "0.84", "pooled_accuracy": "0.80",
         "pooled_accuracy_low": "0.74", "pooled_accuracy_high": "0.86",
         "client_avg_auc": "0.85", "pooled_auc": "0.86",
         "cleveland_accuracy": "0.80", "hungary_accuracy": "0.82",
         "switzerland_accuracy": "0.69", "va_accuracy": "", "cleveland_auc": "0.9",
         "hungary_auc": "0.7", "switzerland_auc": "0.95", "va_auc": ""}


def test_a_dp_run_names_its_worst_hospital_by_its_own_release_with_the_intervals():
    lines = headline_lines(FINAL, TASK, HOSPITALS, {"dp_mode": "patient"}, ["va"])
    text = "\n".join(lines)

    assert lines[0].startswith("**Headline** (DP estimate")
    assert "accuracy: client average 0.720 (0.600\u20130.840), pooled 0.800 (0.740\u20130.860)" \
        in text
    assert "worst hospital switzerland 0.690 (its own DP release, noise included)" in text
    assert "worst hospital hungary 0.700" in text  # AUC: its own worst
    assert "- Declined every round: va." in text


def test_under_secure_aggregation_the_worst_hospital_is_not_available():
    text = "\n".join(headline_lines(FINAL, TASK, HOSPITALS,
                                    {"dp_mode": "hospital", "secagg_enabled": True}, []))

    assert "worst hospital: not available (secure aggregation" in text
    assert "switzerland" not in text
    assert "- Declined every round: none." in text


def test_without_dp_the_figures_are_called_exact():
    text = "\n".join(headline_lines(FINAL, TASK, HOSPITALS, {"dp_mode": "none"}, []))

    assert "exact, as the hospitals sent them (no DP)" in text
    assert "worst hospital switzerland 0.690." in text
