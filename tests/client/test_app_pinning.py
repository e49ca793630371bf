"""App pinning: the digest covers the hospital's code, and a mismatch refuses to run."""

import shutil
from pathlib import Path

import pytest

from client.app_pinning import APP_SHA256, AppPinError, app_digest, check_app_pin

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def app_copy(tmp_path: Path) -> Path:
    for package in ("client", "common"):
        shutil.copytree(REPO / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_app_digest_equal_for_identical_copies(app_copy: Path) -> None:
    assert app_digest(app_copy) == app_digest(REPO)


def test_app_digest_changes_with_one_byte_of_client_code(app_copy: Path) -> None:
    before = app_digest(app_copy)
    target = app_copy / "client" / "privacy.py"
    target.write_text(target.read_text() + "\n# one more line\n")
    assert app_digest(app_copy) != before


def test_app_digest_changes_with_a_new_module(app_copy: Path) -> None:
    before = app_digest(app_copy)
    (app_copy / "common" / "extra.py").write_text("BUDGET = 1e9\n")
    assert app_digest(app_copy) != before


def test_app_digest_ignores_bytecode_and_tests(app_copy: Path) -> None:
    before = app_digest(app_copy)
    cache = app_copy / "client" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "app.cpython-311.pyc").write_bytes(b"\0" * 8)
    (app_copy / "client" / "test_something.py").write_text("x = 1\n")
    assert app_digest(app_copy) == before


def test_app_digest_refuses_a_directory_without_fedcare(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no client/"):
        app_digest(tmp_path)


def test_check_app_pin_accepts_matching_and_absent_pin(app_copy: Path) -> None:
    check_app_pin({APP_SHA256: app_digest(app_copy).upper()}, app_copy)
    check_app_pin({}, app_copy)


def test_check_app_pin_refuses_other_code_naming_both_digests(app_copy: Path) -> None:
    pinned = app_digest(app_copy)
    (app_copy / "client" / "privacy.py").write_text("def privatize_update(*a): return a\n")
    actual = app_digest(app_copy)
    with pytest.raises(AppPinError, match=f"{actual}.*{APP_SHA256}={pinned}"):
        check_app_pin({APP_SHA256: pinned}, app_copy)
