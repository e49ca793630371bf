"""The local trainer: prediction at given weights, and TensorFlow's threads in a Ray actor."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from client.training import get_trainer, ray_actor_cpus
from common.tasks import get_task


@pytest.mark.parametrize("task_name", ["heart-disease", "digits"])
def test_predict_is_the_model_at_those_weights_and_leaves_the_model_alone(task_name):
    task = get_task(task_name)
    trainer = get_trainer(task)
    rng = np.random.default_rng(0)
    held = [rng.normal(size=w.shape).astype(w.dtype) for w in trainer.model.get_weights()]
    asked = [rng.normal(size=w.shape).astype(w.dtype) for w in held]
    x = rng.normal(size=(7, task.num_features)).astype(np.float32)
    trainer.model.set_weights(held)
    outputs = trainer.predict(asked, x)
    for kept, before in zip(trainer.model.get_weights(), held, strict=True):
        np.testing.assert_array_equal(kept, before)  # the model's variables are untouched
    trainer.model.set_weights(asked)
    np.testing.assert_allclose(outputs, trainer.model(tf.constant(x), training=False).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_predict_refuses_a_wrong_number_of_arrays():
    trainer = get_trainer(get_task("heart-disease"))
    with pytest.raises(ValueError, match="weight arrays"):
        trainer.predict(trainer.model.get_weights()[:1], np.zeros((2, 13), np.float32))


def _fake_ray(mode: int, cpus: float | None) -> SimpleNamespace:
    resources = {} if cpus is None else {"CPU": cpus}
    context = SimpleNamespace(worker=SimpleNamespace(mode=mode),
                              get_assigned_resources=lambda: resources)
    return SimpleNamespace(is_initialized=lambda: True, WORKER_MODE=1,
                           get_runtime_context=lambda: context)


@pytest.mark.parametrize(("mode", "cpus", "expected"), [
    (1, 1.0, 1),     # an actor of one CPU (fedcare simulate's): one thread per pool
    (1, 2.0, 2),
    (1, 0.5, 1),     # a fraction of a CPU still runs on one thread
    (1, None, None),  # an actor that reserved no CPU: TensorFlow's own choice
    (0, 1.0, None),  # the driver (SCRIPT_MODE): never limited
])
def test_ray_actor_cpus(monkeypatch, mode, cpus, expected):
    monkeypatch.setitem(sys.modules, "ray", _fake_ray(mode, cpus))
    assert ray_actor_cpus() == expected


def test_outside_ray_nothing_is_limited(monkeypatch):
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert ray_actor_cpus() is None
