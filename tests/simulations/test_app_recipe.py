"""The ClientApp shipped by recipe: small pickles, one build per process, real Messages."""

import pickle

import numpy as np
import ray.cloudpickle as cloudpickle

from client.app import build_client_app
from common.config import RunConfig
from common.models import build_model
from common.tasks import get_task
from common.wire.replies import TrainReply
from server.federation import round_settings
from simulations import app_recipe
from simulations.app_recipe import RecipeClientApp
from simulations.simulate import SimulatedHospitalPrivacy
from tests.wire_messages import context_for, reply_from, request_message

BUILDS: list[str] = []


def counted_app(label: str):
    """A recipe that records each build."""
    BUILDS.append(label)
    return build_client_app(lambda context, data: None)


def test_a_recipe_pickles_small_and_builds_once_per_process():
    BUILDS.clear()
    app = RecipeClientApp(counted_app, "a")
    shipped = cloudpickle.dumps(app)
    assert len(shipped) < 500  # by value, fedcare's app is about 11 KB
    copies = [cloudpickle.loads(shipped) for _ in range(3)]
    assert all(isinstance(c, RecipeClientApp) for c in copies)
    assert all(app_recipe.built_app(*c._recipe) is app_recipe.built_app(counted_app, "a")
               for c in copies)
    assert BUILDS == ["a"]
    app_recipe.built_app(counted_app, "b")  # another recipe: another app
    assert BUILDS == ["a", "b"]


def test_the_shipped_app_answers_a_real_message_like_the_app_itself(tmp_path):
    config = RunConfig.from_run_config({"local-steps": 2, "num-server-rounds": 3})
    settings = round_settings(config, "run-1", 1)
    weights = build_model(get_task(config.task), seed=0).get_weights()
    replies = []
    for name, build in (("shipped", lambda p: pickle.loads(pickle.dumps(
                            RecipeClientApp(build_client_app, p)))),
                        ("direct", build_client_app)):
        # Each its own ledgers: the same seeded noise, charged once in each.
        app = build(SimulatedHospitalPrivacy(config, tmp_path / name))
        reply = app(message=request_message(settings, weights),
                    context=context_for({"partition-id": 1, "num-partitions": 4},
                                        config.to_run_config()))
        replies.append(reply_from(reply))
    assert all(isinstance(r, TrainReply) for r in replies)
    for a, b in zip(replies[0].update, replies[1].update, strict=True):
        np.testing.assert_array_equal(a, b)
