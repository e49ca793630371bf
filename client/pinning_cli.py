"""Hospital command ``fedcare app-digest``: the value a hospital pins in node config
``app-sha256``.
"""

from pathlib import Path
from typing import Annotated

import typer


def app_digest(
    directory: Annotated[Path | None, typer.Argument(
        help="A fedcare checkout or unpacked release (default: the installed fedcare).")] = None,
) -> None:
    """Print the code digest to pin in the SuperNode's node config as app-sha256."""
    from client.app_pinning import APP_SHA256, installed_app_dir
    from client.app_pinning import app_digest as digest_of

    try:
        digest = digest_of(directory if directory is not None else installed_app_dir())
    except FileNotFoundError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(digest)
    typer.echo(f"pin it: add {APP_SHA256}=\"{digest}\" to this hospital's SuperNode node config",
               err=True)
