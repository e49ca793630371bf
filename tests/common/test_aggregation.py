import numpy as np
import pytest

from common.aggregation import coordinate_median, trimmed_mean, weighted_mean
from common.server_optimizers import ServerOptimizer


def test_weighted_mean_equals_hand_computation():
    a = [np.array([1.0, 2.0], np.float32), np.array([[3.0]], np.float32)]
    b = [np.array([4.0, 8.0], np.float32), np.array([[-3.0]], np.float32)]
    # weights 1 and 3: (1*1 + 3*4)/4 = 3.25, (1*2 + 3*8)/4 = 6.5, (3 - 9)/4 = -1.5
    mean = weighted_mean([a, b], [1.0, 3.0])
    np.testing.assert_array_equal(mean[0], np.array([3.25, 6.5], np.float32))
    np.testing.assert_array_equal(mean[1], np.array([[-1.5]], np.float32))
    assert mean[0].dtype == np.float32


def test_weighted_mean_rejects_bad_weights():
    with pytest.raises(ValueError, match="zero updates"):
        weighted_mean([], [])
    with pytest.raises(ValueError, match="positive sum"):
        weighted_mean([[np.ones(2)]], [0.0])


def test_fedavg_server_step_adds_scaled_mean_update():
    weights = [np.array([1.0, -1.0])]
    new = ServerOptimizer("fedavg", 0.5).step(weights, [np.array([2.0, 4.0])])
    np.testing.assert_array_equal(new[0], [2.0, 1.0])


@pytest.mark.parametrize("name", ["fedadam", "fedyogi"])
def test_adaptive_server_step_moves_along_update_by_at_most_lr(name):
    optimizer = ServerOptimizer(name, 0.1)
    weights = [np.zeros(3)]
    update = [np.array([5.0, -0.5, 0.0])]
    new = optimizer.step(weights, update)
    step = new[0] - weights[0]
    assert np.all(np.sign(step) == np.sign(update[0]))
    assert np.all(np.abs(step) <= 0.1 + 1e-12)
    assert set(optimizer.state) == {"m", "v"}


def _stack(values):
    return [[np.asarray(v, dtype=np.float32)] for v in values]


def test_coordinate_median_equals_numpy_median_per_coordinate():
    rng = np.random.default_rng(3)
    updates = [[rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)]
               for _ in range(5)]
    median = coordinate_median(updates)
    for layer in range(2):
        expected = np.median(np.stack([u[layer] for u in updates]), axis=0)
        np.testing.assert_allclose(median[layer], expected, rtol=1e-6)
        assert median[layer].dtype == np.float32


def test_median_and_trimmed_mean_ignore_a_minority_of_huge_updates():
    honest = [[1.0, -1.0], [1.2, -0.8], [0.8, -1.2], [1.1, -0.9], [0.9, -1.1]]
    poisoned = _stack(honest[:4] + [[1e6, -1e6]])
    assert abs(float(weighted_mean(poisoned, [1.0] * 5)[0][0])) > 1e5  # the mean is dragged
    for robust in (coordinate_median(poisoned), trimmed_mean(poisoned, 0.2)):
        assert 0.8 <= robust[0][0] <= 1.2 and -1.2 <= robust[0][1] <= -0.8


def test_trimmed_mean_drops_k_per_side_and_zero_trim_is_the_mean():
    values = _stack([[v] for v in (0.0, 1.0, 2.0, 3.0, 100.0)])
    np.testing.assert_allclose(trimmed_mean(values, 0.2)[0], [2.0])  # k = 1: mean of 1, 2, 3
    np.testing.assert_allclose(trimmed_mean(values, 0.0)[0], [21.2])
    np.testing.assert_allclose(trimmed_mean(values, 0.19)[0], [21.2])  # floor(0.95) = 0
    with pytest.raises(ValueError, match="trim fraction"):
        trimmed_mean(values, 0.5)
