"""fedcare's lean ``flwr-clientapp``: the same arguments and runtime as Flower 1.42's script,
without importing the SuperNode, and the app loaded from the FAB rather than fedcare's install.
"""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from client import clientapp_process
from simulations.deployment.deploy_local import DeploymentError, install_lean_clientapp

REPO = Path(__file__).resolve().parents[2]
# What flwr 1.42's SubprocessExecutor passes (supercore/superexec/executor/subprocess_executor.py).
LAUNCHES = [
    ["--runtime-api-address", "127.0.0.1:39091", "--token", "abc", "--root-certificates",
     "/tmp/ca.crt", "--parent-pid", "4242"],
    ["--runtime-api-address", "127.0.0.1:39091", "--token", "abc", "--insecure"],
    ["--token", "abc", "--insecure", "--allow-runtime-dependency-installation"],
]


def test_the_installed_flwr_is_the_pinned_series():
    assert clientapp_process.flwr_matches(), clientapp_process.flwr_version()


@pytest.mark.parametrize("argv", LAUNCHES)
def test_arguments_parse_as_flowers_own_script_parses_them(argv):
    from flwr.supernode.cli.flwr_clientapp import _parse_args_run_flwr_clientapp

    ours = clientapp_process.argument_parser().parse_args(argv)
    flowers = _parse_args_run_flwr_clientapp().parse_args(argv)
    assert vars(ours) == vars(flowers)


def test_run_hands_the_parsed_task_to_flowers_run_clientapp(monkeypatch):
    import flwr.supernode.runtime.run_clientapp as runtime

    calls = []
    monkeypatch.setattr(runtime, "run_clientapp", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(clientapp_process, "forget_own_package", lambda: None)
    clientapp_process.run(["--runtime-api-address", "127.0.0.1:1", "--token", "t", "--insecure",
                           "--parent-pid", "7"])
    assert calls == [{"runtime_api_address": "127.0.0.1:1", "token": "t", "insecure": True,
                      "certificates": None, "parent_pid": 7,
                      "runtime_dependency_install": False}]


def test_another_flwr_release_runs_flowers_own_script(monkeypatch, capsys):
    import flwr.supernode.cli as supernode_cli

    ran = []
    monkeypatch.setattr(clientapp_process, "flwr_version", lambda: "1.43.0")
    monkeypatch.setattr(supernode_cli, "flwr_clientapp", lambda: ran.append("flower"))
    monkeypatch.setattr(clientapp_process, "run", lambda: ran.append("lean"))
    clientapp_process.main()
    assert ran == ["flower"]
    assert "1.43.0 is not 1.42.x" in capsys.readouterr().err


def _modules_after(code: str, cwd: Path) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          check=True)
    return done.stdout.split()


def test_the_lean_process_does_not_import_the_supernode():
    code = textwrap.dedent("""
        import sys
        import client.clientapp_process as lean
        lean.load_runtime(); lean.argument_parser()
        print(' '.join(m for m in sys.modules if m.startswith('flwr.supernode.cli')
                       or m.startswith('flwr.supernode.start_client_internal')
                       or m in ('tensorflow', 'keras', 'torch', 'opacus')))
    """)
    assert _modules_after(code, REPO) == []
    flowers = "import sys, flwr.supernode.cli.flwr_clientapp; print(' '.join(sys.modules))"
    assert "flwr.supernode.start_client_internal" in _modules_after(flowers, REPO)


def test_the_app_is_imported_from_the_fab_not_from_fedcares_install(tmp_path):
    fab = tmp_path / "installed-fab"
    (fab / "client").mkdir(parents=True)
    (fab / "client" / "__init__.py").write_text("")
    (fab / "client" / "entry.py").write_text("app = 'from the FAB'\n")
    code = textwrap.dedent(f"""
        import sys
        import client.clientapp_process as lean
        lean.forget_own_package()
        from flwr.supercore.object_ref import load_app
        print(load_app('client.entry:app', LookupError, {str(fab)!r}).replace(' ', '_'))
    """)
    assert _modules_after(code, REPO) == ["from_the_FAB"]


def test_deploy_local_links_flwr_clientapp_to_the_lean_script(tmp_path):
    scripts = tmp_path / "venv-bin"
    scripts.mkdir()
    (scripts / "fedcare-clientapp").write_text("#!/bin/sh\n")
    link = install_lean_clientapp(tmp_path / "bin", scripts)
    assert link.name == "flwr-clientapp" and link.resolve() == scripts / "fedcare-clientapp"
    assert install_lean_clientapp(tmp_path / "bin", scripts) == link  # idempotent
    with pytest.raises(DeploymentError, match="fedcare-clientapp not found"):
        install_lean_clientapp(tmp_path / "bin2", tmp_path / "nowhere")


def test_the_console_script_is_declared():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fedcare-clientapp"] == "client.clientapp_process:main"


def _tiny_app(directory: Path, body: str) -> bytes:
    """A real app bundle (Flower's own builder) of a one-module app whose module holds `body`."""
    from flwr.cli.build import build_fab_from_disk

    (directory / "client").mkdir(parents=True, exist_ok=True)
    (directory / "client" / "__init__.py").write_text("")
    (directory / "client" / "entry.py").write_text(body)
    (directory / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "tiny"
        version = "1.0.0"
        [tool.flwr.app]
        publisher = "tests"
        [tool.flwr.app.components]
        serverapp = "client.entry:app"
        clientapp = "client.entry:app"
        [tool.flwr.app.config]
    """))
    return build_fab_from_disk(directory)


def test_an_installed_bundle_is_not_extracted_again(tmp_path, monkeypatch):
    from flwr.cli.install import install_from_fab

    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    calls = []

    def flowers(*args):
        calls.append(args[0])
        return install_from_fab(*args)

    install = clientapp_process.install_once(flowers)
    first, other = _tiny_app(tmp_path / "a", "app = 1\n"), _tiny_app(tmp_path / "b", "app = 2\n")
    path = install(first, None, True)
    assert (path / "client" / "entry.py").read_text() == "app = 1\n"
    assert install(first, None, True) == path and len(calls) == 1  # same bytes: not again
    other_path = install(other, None, True)
    assert other_path != path and len(calls) == 2  # other bytes: Flower's install
    shutil.rmtree(path)
    assert install(first, None, True) == path and len(calls) == 3  # removed: installed again
    assert (path / "client" / "entry.py").read_text() == "app = 1\n"
    assert install(first, tmp_path / "elsewhere", True).parent == tmp_path / "elsewhere" / "apps"
    assert len(calls) == 4  # an install directory of its own: always Flower's call


def test_run_gives_flowers_runtime_the_install_once_wrapper(monkeypatch):
    import flwr.supernode.runtime.run_clientapp as runtime

    monkeypatch.setattr(runtime, "install_from_fab", runtime.install_from_fab)  # restored after
    monkeypatch.setattr(runtime, "run_clientapp", lambda **kwargs: None)
    monkeypatch.setattr(clientapp_process, "forget_own_package", lambda: None)
    clientapp_process.run(["--token", "t", "--insecure"])
    wrapped = runtime.install_from_fab
    assert wrapped.__qualname__ == "install_once.<locals>.install_from_fab"
    clientapp_process.use_install_once(runtime)
    assert runtime.install_from_fab is wrapped  # not wrapped twice
