import numpy as np

from common.config import RunConfig
from simulations.engine.baseline import run_baselines


def test_baselines_evaluate_every_model_on_every_hospital():
    config = RunConfig.from_run_config({"num-server-rounds": 3})
    rows = run_baselines(config, seeds=[0])
    assert [r["method"] for r in rows] == [
        "pooled", "local-cleveland", "local-hungary", "local-switzerland", "local-va"
    ]
    for row in rows:
        for hospital in ("cleveland", "hungary", "switzerland", "va"):
            assert 0.0 <= float(row[f"{hospital}_accuracy"]) <= 1.0
        hospitals = ("cleveland", "hungary", "switzerland", "va")
        accuracies = [float(row[f"{h}_accuracy"]) for h in hospitals]
        assert float(row["client_avg_accuracy"]) == np.mean(accuracies)
    # Switzerland's 30 training rows are all positive: alone it learns "always disease".
    swiss = next(r for r in rows if r["method"] == "local-switzerland")
    pooled = rows[0]
    assert float(pooled["pooled_accuracy"]) > float(swiss["pooled_accuracy"])
