"""Positional arguments keep their help text in ``--help`` (typer 0.20 with click 8.5).

typer's ``TyperArgument`` sets ``self.help`` and then calls click's ``Argument.__init__``,
which since click 8.5 takes a ``help`` of its own and, not given one, sets it to None: every
``typer.Argument(help=...)`` then shows no description (``fedcare budget show --help``:
``PATH  [required]`` and nothing else). ``keep_argument_help()`` hands the text on to click
too; it checks first, so it does nothing once typer does so itself.
"""

from typing import Any


def keep_argument_help() -> None:
    """Make typer's arguments keep their help text (idempotent, a no-op if unneeded)."""
    from typer.core import TyperArgument

    if TyperArgument(param_decls=["probe"], help="probe").help == "probe":
        return
    original = TyperArgument.__init__

    def __init__(self: TyperArgument, *args: Any, help: str | None = None,  # noqa: A002
                 **kwargs: Any) -> None:
        original(self, *args, help=help, **kwargs)
        self.help = help

    TyperArgument.__init__ = __init__  # type: ignore[method-assign]
