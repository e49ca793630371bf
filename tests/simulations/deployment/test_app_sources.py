"""The staged copy of an app directory builds the same Flower bundle as the directory itself."""

import os
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from simulations.deployment.app_sources import stage_app_sources

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "tinyapp"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "tests"

[tool.flwr.app.components]
serverapp = "tinyapp.server:app"
clientapp = "tinyapp.client:app"

[tool.flwr.app.config]
rounds = 1
"""


def _app(root: Path) -> Path:
    """A small app: sources, ignored directories and files, a cache, a symlink and .git."""
    files = {
        "pyproject.toml": PYPROJECT, "README.md": "# tiny\n",
        ".gitignore": ".venv/\nruns/\n*.log\n",
        "tinyapp/__init__.py": "", "tinyapp/server.py": "app = None\n",
        "tinyapp/client.py": "app = None\n", "tinyapp/data/schema.json": "{}\n",
        "tinyapp/__pycache__/server.cpython-311.pyc": "x", "tinyapp/notes.log": "a log\n",
        ".venv/lib/site.py": "ignored = True\n", "runs/old/config.json": "{}\n",
        ".git/config.json": "{}\n", "tests/test_tiny.py": "def test(): pass\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    os.symlink(root / "tinyapp" / "server.py", root / "tinyapp" / "linked.py")
    return root


def test_the_staged_copy_builds_the_same_bundle_byte_for_byte(tmp_path):
    # Arrange
    app = _app(tmp_path / "app")

    # Act
    stage = stage_app_sources(app, tmp_path / "stage" / "app")

    # Assert: Flower's own build of each gives the same bytes; nothing ignored was copied
    assert build_fab_from_disk(stage) == build_fab_from_disk(app)
    copied = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    assert copied == [".git/config.json", ".gitignore", "README.md", "pyproject.toml",
                      "tests/test_tiny.py", "tinyapp/__init__.py", "tinyapp/client.py",
                      "tinyapp/data/schema.json", "tinyapp/server.py"]


def test_an_existing_stage_is_refused(tmp_path):
    app = _app(tmp_path / "app")
    (tmp_path / "stage").mkdir()

    with pytest.raises(FileExistsError):
        stage_app_sources(app, tmp_path / "stage")
