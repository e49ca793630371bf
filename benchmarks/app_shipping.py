"""Benchmark: one message's hand-off to a Ray actor, the ClientApp shipped by value or by recipe.

Flower's Ray backend sends ``(app_fn, message, partition id, context)`` to an actor for every
message. This times that call on one actor like Flower's (one CPU; TensorFlow and Flower
imported), with a real train message and node context, the app shipped two ways:

- by value: Flower's closure over fedcare's ClientApp, cloudpickled with every call (what
  ``fedcare simulate`` sent before ``simulations.engine.app_recipe``);
- by recipe: a ``RecipeClientApp`` (the builder's name and its small arguments).

The actor only unpickles and loads the app (no handler runs), so the figures are the hand-off
alone: the call's start to the actor's, and the whole round trip; medians of ``--calls``.
Usage: ``python -m benchmarks.app_shipping [--calls 60]``.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray
import ray.cloudpickle as cloudpickle

from common.config import RunConfig


@ray.remote(num_cpus=1)
class HandOffActor:
    """Receives what Flower's actor receives; loads the app and returns at once."""

    def __init__(self) -> None:
        import flwr.clientapp  # noqa: F401 - as Flower's actor process has them loaded
        import tensorflow  # noqa: F401

    def run(self, app_fn, message, cid, context) -> float:  # noqa: ANN001 - Flower's shapes
        """Build the app as Flower's actor does and return the seconds it took."""
        started = time.time()
        app_fn()
        return started


def _timed(actor, app_fn, message, context, calls: int) -> tuple[float, float]:
    to_start, round_trip = [], []
    ray.get(actor.run.remote(app_fn, message, "0", context))  # warm: first load, imports
    for _ in range(calls):
        began = time.time()
        started = ray.get(actor.run.remote(app_fn, message, "0", context))
        round_trip.append(time.time() - began)
        to_start.append(started - began)
        time.sleep(0.02)  # a steady round's spacing, not a tight loop
    return statistics.median(to_start), statistics.median(round_trip)


def _train_message(config: RunConfig) -> tuple[object, object]:
    """A steady round's train message to hospital 0 and that hospital's Flower Context."""
    from flwr.app import Context, Message, Metadata, RecordDict

    from common.models import build_model
    from common.tasks import get_task
    from common.wire.records import pack_request
    from server.federation import round_settings

    settings = round_settings(config, "0" * 32, 2)
    weights = build_model(get_task(config.task), seed=0).get_weights()
    message = Message(content=pack_request(settings, weights), metadata=Metadata(
        run_id=1, message_id="m1", src_node_id=1, dst_node_id=7, reply_to_message_id="",
        group_id="2", created_at=time.time(), ttl=3600.0, message_type="train"))
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 4},
                      state=RecordDict(), run_config=config.to_run_config())
    return message, context


def main() -> None:
    """Print the two hand-offs' sizes and times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60)
    args = parser.parse_args()

    from client.app import build_client_app
    from simulations.engine.app_recipe import RecipeClientApp
    from simulations.engine.simulate import SimulatedHospitalPrivacy

    config = RunConfig.from_run_config({})
    with tempfile.TemporaryDirectory() as tmp:
        privacy = SimulatedHospitalPrivacy(config, Path(tmp) / "ledgers")
        by_value_app = build_client_app(privacy)
        recipe_app = RecipeClientApp(build_client_app, privacy)
        message, context = _train_message(config)

        def by_value():  # Flower's _load: a closure over the app object
            return by_value_app

        def by_recipe():
            return recipe_app

        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
        try:
            actor = HandOffActor.remote()
            rows = [(label, len(cloudpickle.dumps(fn)),
                     *_timed(actor, fn, message, context, args.calls))
                    for label, fn in (("by value", by_value), ("by recipe", by_recipe))]
        finally:
            ray.shutdown()
    print(f"{'ClientApp':<11}{'pickled bytes':>14}{'to actor ms':>13}{'round trip ms':>15}")
    for label, size, to_start, trip in rows:
        print(f"{label:<11}{size:>14}{1000 * to_start:>13.2f}{1000 * trip:>15.2f}")
    (_, _, value_start, value_trip), (_, _, recipe_start, recipe_trip) = rows
    print(f"by recipe / by value: to actor {recipe_start / value_start:.2f}, "
          f"round trip {recipe_trip / value_trip:.2f}")


if __name__ == "__main__":
    main()
