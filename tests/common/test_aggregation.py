import numpy as np
import pytest

from common.aggregation import weighted_mean
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
