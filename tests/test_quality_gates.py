"""The quality gates run with the tests (CI runs exactly ``.venv/bin/pytest``).

- ruff, with the rule set ``[tool.ruff.lint]`` names, over the whole repository: zero findings;
- ``mypy --strict`` over the scope ``[tool.mypy]`` names (common, client, server and the
  simulation engine): zero errors;
- no function of the product packages longer than 80 lines (60 is the aim).

Each runs as a subprocess of this venv's interpreter; a failure prints every finding.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("common", "client", "server", "simulations")
MAX_FUNCTION_LINES = 80


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


def long_functions(path: Path, limit: int) -> list[str]:
    """``file:line name (N lines)`` for each function of `path` longer than `limit` lines (from
    its ``def`` to its last line, docstring included).
    """
    found = []
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_product_function_is_longer_than_80_lines() -> None:
    found = [entry for package in PRODUCT for path in sorted((ROOT / package).rglob("*.py"))
             for entry in long_functions(path, MAX_FUNCTION_LINES)]
    assert found == [], "break these along their own steps:\n" + "\n".join(found)


def test_the_length_check_counts_a_function_from_def_to_its_last_line(tmp_path) -> None:
    source = tmp_path / "module.py"
    source.write_text("def short():\n    return 1\n\n\ndef long():\n" + "    x = 1\n" * 4)
    assert [e.split(" ", 1)[1] for e in long_functions(source, 4)] == ["long (5 lines)"]
