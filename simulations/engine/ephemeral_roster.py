"""An ephemeral consortium roster for a simulation's hospitals (``fedcare simulate``).

A simulation is one trust domain (the simulator makes the server and every hospital), so it
makes each simulated hospital's Ed25519 signing key and the roster of their names itself, in
the run directory (``secagg/``; keys 0600), and every simulated hospital pins that roster.
A resumed run reuses them. Deployment uses ``fedcare roster`` and each hospital's own key.
"""

import hashlib
from pathlib import Path

from common.key_files import PendingFile, write_files
from common.secagg.roster import build_roster, make_signing_key

DIRECTORY = "secagg"
ROSTER_FILE = "roster.json"


def roster_dir(run_dir: Path) -> Path:
    """Where a run's ephemeral roster and keys live."""
    return run_dir / DIRECTORY


def key_path(run_dir: Path, hospital: str) -> Path:
    """Simulated hospital `hospital`'s signing key."""
    return roster_dir(run_dir) / f"{hospital}.key"


def ensure_roster(run_dir: Path, hospitals: list[str], *, min_threshold: int) -> tuple[Path, str]:
    """Make (or reuse) the run's roster and keys; return (roster path, its SHA-256 hex)."""
    path = roster_dir(run_dir) / ROSTER_FILE
    if not path.exists():
        roster_dir(run_dir).mkdir(parents=True, exist_ok=True)
        pairs = [make_signing_key() for _ in hospitals]
        roster = build_roster(hospitals, [p.public_key for p in pairs], c=0,
                              min_threshold=min_threshold)
        write_files([PendingFile(key_path(run_dir, name), pair.private_pem, 0o600)
                     for name, pair in zip(hospitals, pairs, strict=True)]
                    + [PendingFile(path, roster.to_bytes(), 0o644)], force=False)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()
