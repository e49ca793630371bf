"""The package layering, read from the source files' import statements (by AST, so an import
inside a function counts as much as one at the top).

- the hospital's package (``client/``) never imports the admin's (``server/``), nor the reverse;
- ``common/`` imports Flower only in its wire module (``common/wire/``);
- the product (``common``, ``client``, ``server`` and ``simulations`` but its studies and
  drills) never imports the benchmarks, the studies or the drills, which the wheel leaves out;
- the built wheel holds no benchmark, study or drill module.
"""

import ast
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("common", "client", "server", "simulations")
RESEARCH = ("benchmarks", "simulations.studies", "simulations.drills")


def module_name(path: Path) -> str:
    """The dotted module name of a source file under ROOT (a package is its ``__init__``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every module a source file imports, absolute, with its line: ``import a.b`` gives
    ``a.b``, ``from a import b`` gives ``a`` and ``a.b`` (b may be a module), and relative
    imports are resolved against the file's own package.
    """
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def within(module: str, packages: tuple[str, ...]) -> bool:
    """Whether `module` is one of `packages` or inside one of them."""
    return any(module == package or module.startswith(package + ".") for package in packages)


def offenders(folders: tuple[str, ...], forbidden: tuple[str, ...], *,
              allowed_in: tuple[str, ...] = ()) -> list[str]:
    """``file:line: module`` for each import of a `forbidden` module by a file under `folders`,
    except in the modules `allowed_in`.
    """
    found = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if within(module_name(path), allowed_in):
                continue
            for line, module in imported_modules(path):
                if within(module, forbidden):
                    found.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    return sorted(set(found))


def test_the_hospital_package_never_imports_the_server_package():
    assert offenders(("client",), ("server",)) == []


def test_the_server_package_never_imports_the_hospital_package():
    assert offenders(("server",), ("client",)) == []


def test_common_imports_flower_only_in_its_wire_module():
    assert offenders(("common",), ("flwr",), allowed_in=("common.wire",)) == []


def test_the_product_never_imports_benchmarks_studies_or_drills():
    found = offenders(PRODUCT, RESEARCH,
                      allowed_in=("simulations.studies", "simulations.drills"))
    assert found == []


def test_the_check_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    # Arrange: a package whose module imports late, relatively and absolutely.
    package = tmp_path / "client"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "late.py").write_text(
        "def f():\n    from server.cli import certs_app\n    return certs_app\n")
    (package / "relative.py").write_text("from . import late\nfrom .late import f\n")
    (package / "plain.py").write_text("import simulations.drills.fault_injection\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)

    # Act
    found = offenders(("client",), ("server", "client.late", "simulations.drills"))

    # Assert
    assert found == [
        "client/late.py:2: server.cli", "client/late.py:2: server.cli.certs_app",
        "client/plain.py:1: simulations.drills.fault_injection",
        "client/relative.py:1: client.late", "client/relative.py:2: client.late",
        "client/relative.py:2: client.late.f"]


def test_the_wheel_holds_no_benchmark_study_or_drill_module(tmp_path):
    pytest.importorskip("hatchling", reason="the wheel is built with the test extra's hatchling")
    # Act: build the wheel the way `pip wheel .` does, from this checkout's hatchling.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--wheel-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("fedcare-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = {module_name(ROOT / name) for name in names if name.endswith(".py")}

    # Assert: the product is there, the research code is not.
    assert {"client.app", "server.app", "common.config", "simulations.cli.main",
            "simulations.engine.simulate", "simulations.engine.baseline"} <= modules
    assert sorted(m for m in modules if within(m, RESEARCH)) == []
    assert sorted(m for m in modules if not within(m, PRODUCT)) == []
