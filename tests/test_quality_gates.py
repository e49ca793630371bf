"""The quality gates run with the tests (CI runs exactly ``.venv/bin/pytest``).

- ruff, with the rule set ``[tool.ruff.lint]`` names, over the whole repository: zero findings;
- ``mypy --strict`` over the scope ``[tool.mypy]`` names (common, client, server and the
  simulation engine): zero errors.

Each runs as a subprocess of this venv's interpreter; a failure prints every finding.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` from the repository root, as a user of this venv would."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, check=False)


def test_ruff_finds_nothing() -> None:
    done = run_tool("ruff", "check", "--no-fix", "--output-format", "concise")
    assert done.returncode == 0, f"ruff check:\n{done.stdout}{done.stderr}"


def test_mypy_strict_finds_nothing() -> None:
    done = run_tool("mypy")
    assert done.returncode == 0, f"mypy (strict, [tool.mypy] files):\n{done.stdout}{done.stderr}"
