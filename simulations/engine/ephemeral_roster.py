"""An ephemeral consortium roster for a simulation's hospitals (``fedcare simulate``).

A simulation is one trust domain (the simulator makes the server and every hospital), so it
makes each simulated hospital's Ed25519 signing key and the roster of their names itself, in
the run directory (``secagg/``; keys 0600), and every simulated hospital pins that roster.
A resumed run reuses them. Deployment uses ``fedcare roster`` and each hospital's own key.

Collusion is assumed by default: from 4 hospitals on the roster's c is 1
(``common.secagg.roster.default_colluders``), so distributed noise divides by h = t - c and
the ledger's epsilon holds against a curious participant. A run that states h itself
(``secagg.honest-contributors``) gets c = t - h, its own assumption.
"""

import hashlib
from pathlib import Path

from common.config import RunConfig
from common.key_files import PendingFile, write_files
from common.secagg.roster import build_roster, default_colluders, make_signing_key

DIRECTORY = "secagg"
ROSTER_FILE = "roster.json"


def roster_dir(run_dir: Path) -> Path:
    """Where a run's ephemeral roster and keys live."""
    return run_dir / DIRECTORY


def key_path(run_dir: Path, hospital: str) -> Path:
    """Simulated hospital `hospital`'s signing key."""
    return roster_dir(run_dir) / f"{hospital}.key"


def simulated_colluders(config: RunConfig) -> int:
    """The c a simulation's roster assumes: t - h if the run states h, else the default.

    The default is ``default_colluders(hospitals)``: 1 from 4 hospitals on, else 0. It never
    exceeds t - 1 (a roster needs c < t).
    """
    t = config.effective_threshold
    c = (t - config.secagg_honest_contributors if config.secagg_honest_contributors
         else default_colluders(config.hospitals))
    return max(0, min(c, t - 1))


def ensure_roster(run_dir: Path, hospitals: list[str], *, min_threshold: int,
                  colluders: int = 0) -> tuple[Path, str]:
    """Make (or reuse) the run's roster and keys; return (roster path, its SHA-256 hex).

    ``colluders`` is the roster's c; ``fedcare simulate`` passes ``simulated_colluders``
    (c >= 1 from 4 hospitals on). A reused roster keeps the c it was made with.
    """
    path = roster_dir(run_dir) / ROSTER_FILE
    if not path.exists():
        roster_dir(run_dir).mkdir(parents=True, exist_ok=True)
        pairs = [make_signing_key() for _ in hospitals]
        roster = build_roster(hospitals, [p.public_key for p in pairs], c=colluders,
                              min_threshold=min_threshold, built_by="fedcare simulate")
        write_files([PendingFile(key_path(run_dir, name), pair.private_pem, 0o600)
                     for name, pair in zip(hospitals, pairs, strict=True)]
                    + [PendingFile(path, roster.to_bytes(), 0o644)], force=False)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()
