"""Whether this ClientApp runs as a simulated hospital inside Flower's simulation engine.

``flwr run .`` on a simulation federation runs every ClientApp in an actor of Flower's Ray
backend; a deployed hospital's SuperNode never does (it runs the ClientApp in its own process
or in a ``flwr-clientapp`` process it starts). Nothing the server sends can make a process a
Ray actor, so the hospital side may use this to tell the researcher's simulated hospitals
(whose ledgers the researcher owns and may create) from real ones (whose ledgers only their
own ``fedcare budget init`` creates).
"""

import sys

__all__ = ["in_flower_simulation"]


def in_flower_simulation() -> bool:
    """Return True in an actor of Flower's Ray simulation engine, False anywhere else.

    Ray is never imported here: a process that has not imported it is no Ray actor. Any
    error from Ray's API (another version) counts as False: the strict, deployed behaviour.
    """
    ray = sys.modules.get("ray")
    if ray is None:
        return False
    try:
        return bool(ray.is_initialized()) and ray.get_runtime_context().get_actor_id() is not None
    except Exception:  # noqa: BLE001 - any failure means "not simulated" (fail closed)
        return False
