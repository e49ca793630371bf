"""The hospitals' ClientApp as the simulation engine ships it: by recipe, not by value.

Flower's Ray backend sends the ClientApp to an actor with every message, cloudpickled. A
ClientApp whose handlers are closures (fedcare's, and any app with mods) pickles by value:
fedcare's is about 11 KB. ``benchmarks.app_shipping`` measured the hand-off to an idle
actor at 5.0 ms that way and 3.3 ms by recipe; inside a running simulation (the actors busy,
the server's threads beside the hand-offs) the call to the actor's start fell from 6-9 ms to
2-4 ms, twice per steady round on the critical path of a 4-hospital, 2-actor simulation. A
``RecipeClientApp`` pickles as the module-level function that builds the app and that
function's arguments (about 1 KB with a run's settings); each process builds the app once, on
its first message, and reuses it for every later one.

The builder must be a module-level function: it is shipped by its module and name (one
defined in a module run as ``python -m package.module`` is looked up under that import
name, since a Ray worker's ``__main__`` is another program). The arguments must pickle by
reference or by small value (settings, paths), and building must be deterministic: every
process builds its own copy.
"""

import importlib
import pickle
import sys
from collections.abc import Callable
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

_BUILT: dict[bytes, ClientApp] = {}  # this process's apps, by their pickled recipe


def built_app(build: Callable[..., ClientApp], *args: Any) -> ClientApp:
    """Return ``build(*args)``, built once per process for each distinct recipe."""
    key = pickle.dumps((build, args))
    app = _BUILT.get(key)
    if app is None:
        app = _BUILT[key] = build(*args)
    return app


def importable(build: Callable[..., ClientApp]) -> Callable[..., ClientApp]:
    """Return `build` as its module's attribute, importable by name in any process.

    Raises
    ------
    ValueError
        If `build` is not a module-level function (a lambda, a nested function) or cannot be
        found under its module's import name.
    """
    module, name = getattr(build, "__module__", None), getattr(build, "__qualname__", "")
    if module == "__main__":  # `python -m package.module`: the same code under its real name
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else None
    found: Callable[..., ClientApp] | None = None
    if module and "<" not in name:
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            found = None
    if found is None or getattr(found, "__qualname__", None) != name:
        raise ValueError(f"a ClientApp recipe needs a module-level builder that other "
                         f"processes can import; {name or build!r} (module "
                         f"{getattr(build, '__module__', None)}) is not one")
    return found


class RecipeClientApp(ClientApp):
    """A ClientApp that runs ``build(*args)`` and pickles as ``(build, *args)``.

    Parameters
    ----------
    build : callable
        A module-level function (pickled by reference) returning a ClientApp.
    *args
        Its arguments; they are pickled with every message, so keep them small.
    """

    def __init__(self, build: Callable[..., ClientApp], *args: Any) -> None:
        super().__init__()
        self._recipe = (importable(build), *args)
        try:
            pickle.dumps(self._recipe)  # as every process keys its copy (built_app)
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            raise ValueError(f"a ClientApp recipe's arguments must pickle by name or value in "
                             f"any process: {error}") from None

    def __call__(self, message: Message, context: Context) -> Message:
        """Handle `message` with this process's copy of the app."""
        return built_app(*self._recipe)(message, context)

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        """Pickle as the recipe (builder and arguments), never the built app."""
        return (RecipeClientApp, self._recipe)
