import numpy as np

from common.server_optimizers import ServerOptimizer
from server.strategy import FedcareStrategy

GLOBAL = [np.zeros(4, np.float32)]


def _update(index: int, arrays: list[np.ndarray], examples: int) -> tuple:
    return index, arrays, float(examples)


class _Strategy:
    """The strategy with the test's global weights bound (aggregation is all it does here)."""

    def __init__(self, strategy: FedcareStrategy) -> None:
        self.strategy = strategy

    def aggregate_updates(self, updates):
        return self.strategy.aggregate(GLOBAL, updates)


def _strategy(weighted: bool) -> _Strategy:
    return _Strategy(FedcareStrategy(hospitals=3, optimizer=ServerOptimizer("fedavg", 1.0),
                                     weighted=weighted))


def test_aggregate_weighted_by_examples_equals_hand_mean():
    rng = np.random.default_rng(0)
    arrays = [[rng.normal(size=4).astype(np.float32)] for _ in range(3)]
    examples = [10, 30, 60]
    new = _strategy(True).aggregate_updates(
        [_update(i, a, n) for i, (a, n) in enumerate(zip(arrays, examples, strict=True))]
    )
    by_hand = (10 * arrays[0][0].astype(float) + 30 * arrays[1][0] + 60 * arrays[2][0]) / 100
    np.testing.assert_allclose(new[0], by_hand, rtol=1e-6)


def test_aggregate_uniform_ignores_examples():
    arrays = [[np.full(4, v, np.float32)] for v in (1.0, 2.0, 6.0)]
    new = _strategy(False).aggregate_updates(
        [_update(i, a, n) for i, (a, n) in enumerate(zip(arrays, [1, 1000, 5], strict=True))]
    )
    np.testing.assert_array_equal(new[0], np.full(4, 3.0, np.float32))


def test_aggregate_result_independent_of_arrival_order():
    rng = np.random.default_rng(1)
    updates = [_update(i, [rng.normal(size=4).astype(np.float32) * 10.0**i], 1) for i in range(3)]
    forward = _strategy(False).aggregate_updates(updates)
    backward = _strategy(False).aggregate_updates(updates[::-1])
    assert forward[0].tobytes() == backward[0].tobytes()


def test_robust_aggregators_resist_one_scaled_update():
    honest = [[np.full(4, v, np.float32)] for v in (1.0, 1.1, 0.9, 1.05, 0.95)]
    updates = [_update(i, a, 1) for i, a in enumerate(honest)]
    updates.append(_update(5, [np.full(4, 20.0, np.float32)], 1))  # scaled 20x
    for aggregator in ("median", "trimmed-mean"):
        strategy = _Strategy(FedcareStrategy(hospitals=6, optimizer=ServerOptimizer("fedavg", 1.0),
                                             weighted=False, aggregator=aggregator,
                                             trim_fraction=0.2))
        new = strategy.aggregate_updates(updates)
        assert np.all((new[0] >= 0.9) & (new[0] <= 1.1)), aggregator
    mean = _strategy(False).aggregate_updates(updates)
    assert np.all(mean[0] > 4.0)  # the plain mean is dragged by the attacker
