"""The ClientApp shipped by recipe: small pickles, one build per process, real Messages."""

import pickle
import sys
import types

import numpy as np
import pytest
import ray.cloudpickle as cloudpickle

from client.app import build_client_app
from common.config import RunConfig
from common.models import build_model
from common.tasks import get_task
from common.wire.replies import TrainReply
from server.federation import round_settings
from simulations.engine import app_recipe
from simulations.engine.app_recipe import RecipeClientApp
from simulations.engine.simulate import SimulatedHospitalPrivacy
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


def test_a_builder_others_cannot_import_is_refused_at_once():
    def nested():
        return build_client_app()

    for build in (nested, lambda: build_client_app()):
        with pytest.raises(ValueError, match="module-level builder"):
            RecipeClientApp(build)


def test_a_builder_of_a_module_run_as_a_script_ships_under_its_import_name(monkeypatch):
    """``python -m simulations.drills.fault_injection``: its functions live in ``__main__``
    there, but a Ray worker's ``__main__`` is Ray's; the recipe names the module's import name.
    """
    as_script = types.FunctionType(counted_app.__code__, counted_app.__globals__, "counted_app")
    as_script.__module__, as_script.__qualname__ = "__main__", "counted_app"
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(
        __spec__=types.SimpleNamespace(name=counted_app.__module__)))
    app = RecipeClientApp(as_script)
    assert app._recipe[0].__module__ == counted_app.__module__
    assert pickle.loads(pickle.dumps(app))._recipe[0] is app._recipe[0]


def test_arguments_that_other_processes_cannot_unpickle_are_refused_at_once():
    with pytest.raises(ValueError, match="arguments must pickle"):
        RecipeClientApp(counted_app, lambda: None)
