"""Hospital command ``fedcare certs hospital``: the SuperNode's authentication key pair.

Registered under the admin's ``certs`` group by the ``fedcare`` root, so that every
key-making command is in one place; the key stays at the hospital, only ``NAME.pub`` leaves.
"""

from pathlib import Path
from typing import Annotated

import typer

from common.console import console, fail


def certs_hospital(
    directory: Annotated[Path, typer.Argument(help="Directory for NAME.key and NAME.pub.")],
    name: Annotated[str, typer.Argument(help="The hospital's name (names the files).")],
    force: Annotated[bool, typer.Option(help="Overwrite an existing key pair.")] = False,
) -> None:
    """Create a hospital's SuperNode authentication key pair (run at the hospital)."""
    from client.auth_keys import create_hospital_keys

    try:
        files = create_hospital_keys(directory, name, force=force)
    except (ValueError, FileExistsError) as error:
        fail(str(error))
    console.print(f"[green]created[/] {files.key} (stays here, 0600; pass it to "
                  "flower-supernode --auth-supernode-private-key)")
    console.print(f"send {files.pub} to the consortium admin, who registers it under the "
                  f"name the run gives this hospital (task csv: hospital-<partition-id>): "
                  f"`flwr supernode register {files.pub.name} --name {name}`")
