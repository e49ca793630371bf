"""Benchmark: cost of privacy per local epoch and per steady round, as ratios to no DP.

For each task (heart-disease and digits by default) and each DP mode (none, patient,
hospital) it times one local epoch on the largest hospital with the process's compiled
trainer (median of repeats; hospital level trains like none, then clips and noises the
update) and the median steady round of a real simulation (rounds 2..R). Usage:
``python -m benchmarks.privacy [--tasks heart-disease digits] [--rounds 10]``.
"""

import argparse
import statistics
import time

import numpy as np

from benchmarks.rounds import measure
from common.config import RunConfig
from common.dp.events import GaussianRoundEvent
from common.models import build_model
from common.tasks import get_task, load_task_hospitals

MODES = ("none", "patient", "hospital")


def epoch_seconds(config: RunConfig, mode: str, *, repeats: int = 30) -> float:
    """Median seconds of one local epoch (plus update privatization) on the largest hospital."""
    from client.privacy import hospital_noise_stddev, privatize_update
    from client.training import get_trainer

    task = get_task(config.task)
    hospitals = load_task_hospitals(task, config.hospitals, seed=0, partition="iid", alpha=0.5)
    data = max(hospitals, key=lambda h: h.num_train)
    trainer = get_trainer(task)
    weights = build_model(task, seed=0).get_weights()
    rng = np.random.default_rng(0)
    steps = -(-data.num_train // config.batch_size)
    event = GaussianRoundEvent(noise_multiplier=1.0, sample_rate=1.0, steps=1, level="hospital")
    times = []
    for _ in range(repeats + 2):
        started = time.perf_counter()
        if mode == "patient":
            trainer.fit_dp_sgd(weights, data.x_train, data.y_train, steps=steps,
                               batch_size=config.batch_size, learning_rate=0.1,
                               clipping_norm=0.5, noise_multiplier=1.0, rng=rng)
        else:
            local, _ = trainer.fit(weights, data.x_train, data.y_train, epochs=1,
                                   batch_size=config.batch_size, learning_rate=0.1, rng=rng)
            if mode == "hospital":
                stddev = hospital_noise_stddev(event, clipping_norm=0.5, noise_mode="local")
                privatize_update([a - b for a, b in zip(local, weights, strict=True)],
                                 clipping_norm=0.5, stddev=stddev, rng=rng)
        times.append(time.perf_counter() - started)
    return statistics.median(times[2:])  # the first calls trace


def main() -> None:
    """Print epoch and steady-round seconds per task and mode, with ratios to none."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["heart-disease", "digits"])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    lines = []
    for task_name in args.tasks:
        task = get_task(task_name)
        results = {}
        for mode in MODES:
            config = RunConfig.from_run_config({
                "task": task_name, "hospitals": min(task.default_hospitals, 4),
                "num-server-rounds": args.rounds, "dp.mode": mode, "dp.epsilon": 8.0,
                "batch-size": 64 if task_name == "digits" else 12,
            })
            epoch = epoch_seconds(config, mode)
            _, steady = measure(config, None)
            results[mode] = (epoch, steady)
        for mode, (epoch, steady) in results.items():
            base_epoch, base_round = results["none"]
            lines.append(f"{task_name:<14}{mode:<10}{epoch * 1000:>10.2f}"
                         f"{epoch / base_epoch:>8.2f}x{steady:>12.3f}{steady / base_round:>8.2f}x")
    print(f"{'task':<14}{'dp':<10}{'epoch ms':>10}{'ratio':>9}{'round s':>12}{'ratio':>9}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
