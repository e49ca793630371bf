"""Admin commands of the ``fedcare`` CLI: the consortium's certificates (``fedcare certs ...``).

``certs hospital`` (run at the hospital) is defined in ``client/certs_cli.py``; the ``fedcare``
root adds it to this group, so that every key-making command is under one ``certs`` group.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from common.console import console, error_console, fail

certs_app = typer.Typer(
    help="TLS certificates (admin) and SuperNode authentication keys (hospital).",
    no_args_is_help=True,
    add_completion=False,
)


ServerNames = Annotated[list[str], typer.Option(
    "--server-name",
    help="Host name or IP address hospitals dial to reach the SuperLink (repeat for each).")]
Days = Annotated[int, typer.Option(help="Validity of the server certificate in days.")]


def warn_without_loopback(server_names: list[str]) -> None:
    """Warn when the certificate will not name 127.0.0.1, which the SuperLink itself dials.

    A SuperLink started with ``--host 0.0.0.0`` (or the default 127.0.0.1) runs ServerApps
    through a SuperExec that connects to 127.0.0.1 and verifies this certificate (flwr 1.42).
    """
    if "127.0.0.1" not in server_names:
        error_console.print(
            "[bold yellow]warning:[/] no --server-name 127.0.0.1: a SuperLink listening on "
            "0.0.0.0 or 127.0.0.1 starts its ServerApp through a SuperExec that connects to "
            "127.0.0.1 and checks this certificate, so runs could not start")


@certs_app.command("init")
def certs_init(
    directory: Annotated[Path, typer.Argument(
        help="Directory for ca.crt, ca.key, server.crt, server.key.")],
    server_name: ServerNames,
    days: Days = 365,
    ca_days: Annotated[int, typer.Option(help="Validity of the CA certificate in days.")] = 3650,
    force: Annotated[bool, typer.Option(help="Overwrite existing files (makes a NEW CA).")] = False,
) -> None:
    """Create the consortium CA and the SuperLink's TLS certificate (admin, once)."""
    from server.certificates import create_consortium

    try:
        files = create_consortium(directory, server_name, days=days, ca_days=ca_days,
                                  force=force)
    except (ValueError, FileExistsError) as error:
        fail(str(error))
    warn_without_loopback(server_name)
    console.print(f"[green]created[/] {files.ca_crt} (send to every hospital), "
                  f"{files.server_crt} and {files.server_key} (for the SuperLink)")
    console.print(f"keep {files.ca_key} offline: whoever holds it can impersonate the server")


@certs_app.command("renew")
def certs_renew(
    directory: Annotated[Path, typer.Argument(
        help="The directory `certs init` wrote (with ca.key).")],
    server_name: ServerNames,
    days: Days = 365,
) -> None:
    """Re-issue server.crt/server.key with the existing CA (hospitals need nothing new)."""
    from server.certificates import renew_server_certificate

    try:
        files = renew_server_certificate(directory, server_name, days=days)
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    warn_without_loopback(server_name)
    console.print(f"[green]renewed[/] {files.server_crt} and {files.server_key}: "
                  "restart the SuperLink to use them")


@certs_app.command("show")
def certs_show(
    certificate: Annotated[Path, typer.Argument(help="A PEM certificate, e.g. server.crt.")],
) -> None:
    """Show a certificate's names, issuer and expiry."""
    from server.certificates import read_certificate_info

    try:
        info = read_certificate_info(certificate)
    except (ValueError, OSError) as error:
        fail(str(error))
    days_left = info.days_left(now=datetime.now(UTC))
    console.print(f"subject   {info.subject}\nissuer    {info.issuer}\n"
                  f"CA        {'yes' if info.is_ca else 'no'}\n"
                  f"valid     {info.not_before:%Y-%m-%d %H:%M} to "
                  f"{info.not_after:%Y-%m-%d %H:%M} UTC")
    if info.dns_names or info.ip_addresses:
        console.print(f"names     {', '.join(info.dns_names + info.ip_addresses)}")
    colour = "red" if days_left < 0 else "yellow" if days_left < 30 else "green"
    state = "EXPIRED" if days_left < 0 else f"{days_left:.0f} days left"
    console.print(f"expiry    [{colour}]{state}[/]")
