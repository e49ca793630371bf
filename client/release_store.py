"""A hospital's copy of each noised update it releases, so a repeated request gets the same one.

When the server restarts from a checkpoint it asks again for a round the hospital may already
have charged. A *new* noise draw for that round would go unaccounted; resending the very update
already charged (or about to be) costs nothing more. The store keeps it next to the ledger,
keyed by (run, round, level) and by a digest of the global weights it was computed from, so a
request with other weights never gets it. The file holds only what leaves the hospital anyway.

Order in a round: save the release, then charge the ledger, then send. A crash after the save
but before the charge leaves an uncharged release, which is charged before it is ever sent.
Two processes asking for the same round at once: the caller holds ``round_lock`` across
check -> noise draw -> save -> charge, so the second waits and then finds the saved release
(one noise draw, one charge, identical replies).
"""

import contextlib
import fcntl
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from collections.abc import Iterator

import numpy as np

from common.dp.events import GaussianRoundEvent
from common.types import NDArrays

KEEP_ROUNDS = 3  # releases kept per hospital (older rounds of the same run are pruned)


@dataclass(frozen=True, slots=True)
class Release:
    """A noised update exactly as released, with the event it is charged under."""

    update: NDArrays
    event: GaussianRoundEvent
    train_loss: float
    noise_stddev: float


def weights_digest(weights: NDArrays) -> str:
    """SHA-256 over the arrays' shapes, dtypes and bytes (identifies the global model sent)."""
    digest = hashlib.sha256()
    for array in weights:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype.str}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class ReleaseStore:
    """The releases of one hospital, in ``<ledger>.releases/`` beside its ledger file."""

    def __init__(self, ledger_path: Path) -> None:
        self.directory = ledger_path.with_name(f"{ledger_path.name}.releases")

    def _path(self, run_id: str, server_round: int, level: str) -> Path:
        safe_run = "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)
        return self.directory / f"{safe_run}-round-{server_round:05d}-{level}.npz"

    @contextlib.contextmanager
    def round_lock(self, run_id: str, server_round: int, level: str) -> Iterator[None]:
        """Hold an exclusive lock on (run, round, level) for the block, across processes.

        A POSIX advisory lock (``fcntl.flock``) on a lock file in the release directory
        beside the ledger; a second holder -- another thread with its own ``with`` or
        another process -- blocks until the first leaves the block. The lock file is one per
        (run, level), kept (removing a lock file others may hold would break the exclusion),
        so rounds of one run serialise too, which a hospital's rounds are anyway. Hold it
        across check -> noise draw -> save -> charge. Not re-entrant: do not nest it in one
        thread. The ledger's own lock may be taken inside.
        """
        if isinstance(server_round, bool) or not isinstance(server_round, int):
            raise ValueError(f"server_round must be an integer, got {server_round!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        safe_run = "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)
        lock_path = self.directory / f".{safe_run}-{level}.lock"
        with open(lock_path, "a+") as handle:  # a new open file: flock then excludes threads too
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def save(self, run_id: str, server_round: int, release: Release, *, digest: str) -> None:
        """Write the release atomically (temp file, fsync, rename); prune older rounds."""
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = {"digest": digest, "train_loss": release.train_loss,
                "noise_stddev": release.noise_stddev, "level": release.event.level,
                "noise_multiplier": release.event.noise_multiplier,
                "sample_rate": release.event.sample_rate, "steps": release.event.steps,
                "noise_mode": release.event.noise_mode}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.array(json.dumps(meta)),
                 **{f"update_{i:04d}": u for i, u in enumerate(release.update)})
        path = self._path(run_id, server_round, release.event.level)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        self._prune(keep=path)

    def load(self, run_id: str, server_round: int, level: str, *, digest: str) -> Release | None:
        """Return the release for (run, round, level) made from weights with `digest`, or None.

        A missing, unreadable or partly written file, or one made from other weights, gives None.
        """
        path = self._path(run_id, server_round, level)
        try:
            with np.load(path) as stored:
                meta = json.loads(str(stored["meta"]))
                update = [stored[k] for k in sorted(k for k in stored.files if k.startswith("update_"))]
        except (OSError, ValueError, KeyError):
            return None
        if meta.get("digest") != digest:
            return None
        event = GaussianRoundEvent(level=meta["level"], noise_multiplier=meta["noise_multiplier"],
                                   sample_rate=meta["sample_rate"], steps=meta["steps"],
                                   noise_mode=meta.get("noise_mode"))
        return Release(update=update, event=event, train_loss=float(meta["train_loss"]),
                       noise_stddev=float(meta["noise_stddev"]))

    def _prune(self, *, keep: Path) -> None:
        files = sorted(self.directory.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in files[KEEP_ROUNDS:]:
            if stale != keep:
                stale.unlink(missing_ok=True)
