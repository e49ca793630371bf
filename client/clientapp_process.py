"""A lean ``flwr-clientapp``: Flower's per-message ClientApp process, without the SuperNode stack.

A SuperNode's SuperExec starts a fresh ``flwr-clientapp`` process (found by ``PATH``) for every
message. Flower 1.42's script imports ``flwr.supernode.cli``, whose package imports the whole
SuperNode (``flower_supernode``: its gRPC servers, the SuperExec, the object store), although
the process only runs ``flwr.supernode.runtime.run_clientapp.run_clientapp``: about 0.7 s of
CPU spent on every message for nothing. This entry point parses the same arguments and calls
the same function, importing only its module; the process then does exactly what Flower's does
(pull the message and the FAB, install it, load the ClientApp, push the reply and the Context),
except that a bundle Flower already installed is not extracted again (``install_once``).

Use it by putting an executable named ``flwr-clientapp`` that runs it first on the SuperNode's
``PATH`` (``fedcare deploy-local`` does: ``<out>/bin/flwr-clientapp`` links to the
``fedcare-clientapp`` console script). It is pinned to the flwr release it was written against
(``FLWR_SERIES``): on any other it hands over to Flower's own script, unchanged.

With ``FEDCARE_CLIENTAPP_SERVER`` in its environment (a hospital's ClientApp fork server,
``client.fork_server``) it first asks that server to fork the process from its preloaded
runtime (``client.fork_launcher``: standard library only, milliseconds); if the server is
absent or refuses, it says so on stderr and runs the ClientApp itself, as above.
"""

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # argparse is imported only where the arguments are parsed (not by the launcher)
    import argparse

FLWR_SERIES = "1.42."  # the arguments and run_clientapp's signature are those of flwr 1.42.x
INSTALLED_RECORDS = ".fedcare-installed"  # under $FLWR_HOME/apps: bundles Flower installed
RUNTIME_MODULE = "flwr.supernode.runtime.run_clientapp"  # Flower's per-message process


def flwr_version() -> str:
    """The installed flwr's version (``flwr`` is imported by every path below anyway)."""
    import flwr

    return str(flwr.__version__)


def flwr_matches() -> bool:
    """Whether the installed flwr is the release series this entry point was written for."""
    return flwr_version().startswith(FLWR_SERIES)


def argument_parser() -> "argparse.ArgumentParser":
    """The arguments of flwr 1.42's ``flwr-clientapp`` (what the SuperExec passes)."""
    import argparse

    from flwr.common.args import add_args_flwr_app_common
    from flwr.supercore.constant import SUPERNODE_DEFAULT_CLIENT_ADDRESS

    parser = argparse.ArgumentParser(prog="flwr-clientapp",
                                     description="Run a Flower ClientApp (fedcare's lean entry)")
    parser.add_argument("--runtime-api-address", dest="runtime_api_address",
                        default=SUPERNODE_DEFAULT_CLIENT_ADDRESS, type=str,
                        help="Address of the SuperNode's Runtime API.")
    add_args_flwr_app_common(parser=parser)
    return parser


def forget_own_package() -> None:
    """Drop this package's modules from ``sys.modules``.

    Flower imports the app's ClientApp (``client.entry``) from the installed FAB by module
    name; with ``client`` already imported from fedcare's own install, ``client.entry`` would
    resolve there instead. Forgetting it makes the FAB's copy load, as under Flower's script.
    """
    for name in [name for name in sys.modules if name == "client" or name.startswith("client.")]:
        del sys.modules[name]


def load_runtime() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """Import what the process runs, and only that: (token reader, certificate reader,
    ``run_clientapp``). ``benchmark_deployment`` measures this import against Flower's script's.
    """
    from flwr.common.args import try_obtain_flwr_app_token
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    return try_obtain_flwr_app_token, validate_and_resolve_root_certificates, run_clientapp


def install_once(install: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap Flower's ``install_from_fab`` so that bytes already installed are not re-extracted.

    Flower 1.42's per-message process extracts the whole app bundle into a temporary
    directory and checks every file's hash, then finds the app installed under its
    ``FLWR_HOME`` (by the bundle's SHA-256) and returns: about 0.2 s of CPU per message for
    nothing. The wrapper records the full SHA-256 of each bundle Flower installed
    (``$FLWR_HOME/apps/.fedcare-installed/<sha256>``) and, for the same bytes with the
    installed directory still there, returns without extracting: the directory Flower would
    have returned. Anything else (other bytes, a path, an install directory, a prompt) is
    Flower's own call.
    """
    import hashlib
    from pathlib import Path

    from flwr.supercore.utils import get_flwr_home

    def install_from_fab(fab_file: Any, install_dir: Any = None, skip_prompt: bool = False
                         ) -> Any:
        if not isinstance(fab_file, bytes) or install_dir is not None or not skip_prompt:
            return install(fab_file, install_dir, skip_prompt)
        record = get_flwr_home() / "apps" / INSTALLED_RECORDS / hashlib.sha256(fab_file).hexdigest()
        try:
            installed = Path(record.read_text(encoding="utf-8").strip())
        except OSError:
            installed = None
        if installed is not None and installed.is_dir():
            return installed
        installed = Path(install(fab_file, install_dir, skip_prompt))
        with contextlib.suppress(OSError):  # only a shortcut: without it Flower's call runs
            record.parent.mkdir(parents=True, exist_ok=True)
            pending = record.with_name(f"{record.name}.{os.getpid()}")
            pending.write_text(str(installed), encoding="utf-8")
            pending.replace(record)  # atomic: a concurrent reader sees all of it or nothing
        return installed

    return install_from_fab


def use_install_once(runtime: Any) -> None:
    """Give Flower's ClientApp runtime module `runtime` the ``install_once`` wrapper (once)."""
    if runtime.install_from_fab.__qualname__ != "install_once.<locals>.install_from_fab":
        runtime.install_from_fab = install_once(runtime.install_from_fab)


def run(argv: Sequence[str] | None = None) -> None:
    """Parse `argv` as ``flwr-clientapp`` does and run the ClientApp task it names."""
    try_obtain_flwr_app_token, validate_and_resolve_root_certificates, run_clientapp = (
        load_runtime())
    args = argument_parser().parse_args(argv)
    use_install_once(importlib.import_module(RUNTIME_MODULE))
    forget_own_package()
    run_clientapp(
        runtime_api_address=args.runtime_api_address,
        token=try_obtain_flwr_app_token(args),
        insecure=args.insecure,
        certificates=validate_and_resolve_root_certificates(args.root_certificates,
                                                            args.insecure),
        parent_pid=args.parent_pid,
        runtime_dependency_install=args.runtime_dependency_install,
    )


def launch_by_fork_server(argv: list[str]) -> int | None:
    """Have the fork server that ``FEDCARE_CLIENTAPP_SERVER`` names run this message.

    Returns the child's exit code, or None when there is no server to ask or nothing ran
    (said on stderr): the caller then runs the ClientApp in this process.
    """
    from client.fork_protocol import KEY_VARIABLE, SERVER_VARIABLE

    server = os.environ.get(SERVER_VARIABLE)
    if not server:
        return None
    from client.fork_launcher import ForkServerUnavailable, launch, say

    try:
        return launch(argv, server, os.environ.get(KEY_VARIABLE) or None)
    except ForkServerUnavailable as error:
        say(f"{error}; running the ClientApp in this process instead")
        return None


def main() -> None:
    """Console script ``fedcare-clientapp``: by the hospital's fork server if one is named,
    else the lean process on flwr 1.42, Flower's otherwise.
    """
    code = launch_by_fork_server(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    if not flwr_matches():
        from flwr.supernode.cli import flwr_clientapp

        sys.stderr.write(f"fedcare-clientapp: flwr {flwr_version()} is not {FLWR_SERIES}x; "
                         "running Flower's own flwr-clientapp\n")
        flwr_clientapp()
        return
    run()


if __name__ == "__main__":
    main()
