"""App pinning: a hospital runs only the fedcare code whose digest it wrote in its node config.

The digest is SHA-256 over the sorted lines ``<relative path>,<sha256 of the file>`` of every
``.py`` and ``.json`` file under ``client/`` and ``common/`` (the code and data a hospital
runs), skipping ``__pycache__`` and test files, as Flower's app bundle (FAB) does. The bundle
copies these files byte for byte, so the digest of a reviewed checkout equals the digest of the
installed bundle built from it.

The ClientApp checks its own installed code against node config ``app-sha256`` before it
handles any message. Limit: the check runs inside the code it checks, so it stops an
accidental or substituted release, not a server that deliberately ships a ClientApp without
the check. Flower 1.42's own mechanism (``flower-supernode --trusted-entities``, Ed25519
signatures checked before any app code runs) accepts only bundles signed through Flower Hub:
a SuperLink marks a locally submitted bundle unverified, so it is unusable offline.
"""

import hashlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

APP_SHA256 = "app-sha256"  # node config key: the digest this hospital accepts
PINNED_PACKAGES = ("client", "common")
PINNED_SUFFIXES = (".py", ".json")


class AppPinError(RuntimeError):
    """The installed app's digest differs from the one the hospital pinned."""


def _pinned_files(app_dir: Path) -> Iterator[Path]:
    for package in PINNED_PACKAGES:
        for path in sorted((app_dir / package).rglob("*")):
            name = path.name
            if (path.is_file() and path.suffix in PINNED_SUFFIXES
                    and "__pycache__" not in path.parts
                    and not name.startswith("test_") and not name.endswith("_test.py")):
                yield path


def app_digest(app_dir: str | Path) -> str:
    """Return the hex SHA-256 digest of the pinned files under `app_dir` (a checkout or bundle).

    Raises
    ------
    FileNotFoundError
        If `app_dir` has no ``client/`` or ``common/`` package.
    """
    app_dir = Path(app_dir)
    for package in PINNED_PACKAGES:
        if not (app_dir / package).is_dir():
            raise FileNotFoundError(f"{app_dir} is not a fedcare app: it has no {package}/")
    lines = []
    for path in _pinned_files(app_dir):
        relative = path.relative_to(app_dir).as_posix()
        lines.append(f"{relative},{hashlib.sha256(path.read_bytes()).hexdigest()}\n")
    return hashlib.sha256("".join(sorted(lines)).encode("utf-8")).hexdigest()


def installed_app_dir() -> Path:
    """The directory this process imported fedcare's ``client`` package from (the bundle)."""
    return Path(__file__).resolve().parents[1]


@lru_cache(maxsize=4)
def _cached_digest(app_dir: Path) -> str:
    return app_digest(app_dir)


def check_app_pin(node_config: dict[str, object], app_dir: Path) -> None:
    """Raise ``AppPinError`` unless `app_dir`'s digest equals node config ``app-sha256``.

    Without ``app-sha256`` in the node config nothing is pinned (simulation, or a hospital
    that chose not to pin).
    """
    expected = str(node_config.get(APP_SHA256, "")).strip().lower()
    if not expected:
        return
    actual = _cached_digest(app_dir)
    if actual != expected:
        raise AppPinError(
            f"refusing to run this app: its code digest is {actual}, but this hospital's node "
            f"config pins {APP_SHA256}={expected} (`fedcare app-digest` on the reviewed "
            "release gives the value to pin)"
        )


def verify_app_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: check the pin before any handler runs; a mismatch becomes an error reply."""
    check_app_pin(dict(context.node_config), installed_app_dir())
    return call_next(msg, context)
