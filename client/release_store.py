"""A hospital's copy of each noised update it releases, bound to the request it was made for.

When the server restarts from a checkpoint it asks again for a round the hospital may already
have charged. A *new* noise draw for that round would go unaccounted; resending the very update
already charged (or about to be) costs nothing more. But a release belongs to the request it
was made for: it is saved with a ``ReleaseKey`` holding everything that shaped it (run, round,
level, noise mode, whether it enters secure aggregation, the round settings that shape
training, noise or shares, the global weights' digest, the pinned roster's digest, and the
round's t, c and h), and only a request with the identical key gets it again (see
``client.local_round`` for the rules: e.g. a release made for a secure round never leaves in
the clear, nor enters a second secure aggregation). The file holds only what leaves the
hospital anyway, in ``<ledger>.releases/`` beside the ledger.

Order in a round: save the release, then charge the ledger, then send. A crash after the save
but before the charge leaves an uncharged release, which is charged before it is ever sent.
Two processes asking for the same round at once: the caller holds ``round_lock`` across
check -> noise draw -> save -> charge, so the second waits and then finds the saved release
(one noise draw, one charge; the second request gets it only if its key is identical).
"""

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from common.dp.events import GaussianRoundEvent
from common.types import NDArrays
from common.wire.settings import FIELD_KEYS, RoundSettings, settings_to_fields

KEEP_ROUNDS = 3  # releases kept per hospital (older rounds of the same run are pruned)
KEY_FORMAT = 2  # meta format of a saved release keyed by ReleaseKey (1: weights digest only)

# Round settings that do not shape a release; every other field is keyed, including any field
# added later (fail closed: a new setting counts until it is shown not to shape the release).
# - fedcare_version: admission refuses any version but the hospital's own before training,
#   so every request that reaches the store carries the same one.
# - evaluate_received: asks the hospital also to evaluate the weights it received; that
#   evaluation rides beside the update and does not touch it.
# run_id and server_round are keyed as fields of their own.
NOT_SHAPING = frozenset({"fedcare_version", "evaluate_received", "run_id", "server_round"})
SHAPING_FIELDS = tuple(name for name in FIELD_KEYS if name not in NOT_SHAPING)


@dataclass(frozen=True, slots=True)
class Release:
    """A noised update exactly as released, with the event it is charged under."""

    update: NDArrays
    event: GaussianRoundEvent
    train_loss: float
    noise_stddev: float


@dataclass(frozen=True, slots=True)
class ReleaseKey:
    """Everything that shaped a release; a saved release is sent again only for an equal key.

    Attributes
    ----------
    run_id, server_round : str, int
        The run and round the release answers.
    level : {"patient", "hospital"}
        The hospital's DP level.
    noise_mode : {"local", "distributed"}
        The round's noise mode (distributed: the update carries a 1/sqrt(h) share only).
    secure : bool
        Whether the release enters secure aggregation (it then leaves only masked, once).
    settings : tuple of (wire key, value)
        The round settings that shape training, noise or shares (``SHAPING_FIELDS``), sorted.
    weights_digest : str
        SHA-256 of the global weights the update was computed from (``weights_digest``).
    roster_digest : str
        SHA-256 (hex) of the pinned consortium roster, "" without one.
    threshold, colluders, honest : int
        The round's t (0 without secure aggregation), the c this hospital assumed (its own,
        or the roster's if larger) and the round's h (the divisor of distributed noise).
    """

    run_id: str
    server_round: int
    level: str
    noise_mode: str
    secure: bool
    settings: tuple[tuple[str, Any], ...]
    weights_digest: str
    roster_digest: str
    threshold: int
    colluders: int
    honest: int

    @property
    def settings_digest(self) -> str:
        """SHA-256 (hex) of the shaping settings, in canonical JSON."""
        return hashlib.sha256(_canonical(dict(self.settings)).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The key as a JSON object (settings as an object; its digest alongside)."""
        document = asdict(self)
        document["settings"] = dict(self.settings)
        document["settings_digest"] = self.settings_digest
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> "ReleaseKey":
        """Read a key written by ``to_json`` (KeyError, TypeError or ValueError if it is not)."""
        settings = document["settings"]
        if not isinstance(settings, dict):
            raise ValueError("settings must be an object")
        values = {f.name: document[f.name] for f in fields(cls) if f.name != "settings"}
        return cls(settings=tuple(sorted(settings.items())), **values)

    def differences(self, asked: "ReleaseKey") -> list[str]:
        """What `asked` (a new request) changes from this key (a saved release's), in words.

        Empty when the keys are equal. Each item names the field, the value the release was
        made for and the value asked.
        """
        out = []
        if self.secure != asked.secure:
            out.append("secure aggregation (the release was made for a secure round, masked "
                       "and carrying its noise share; this request would send it in the clear)"
                       if self.secure else
                       "secure aggregation (the release was sent in the clear; this request "
                       "would put it into a secure sum)")
        for name in ("run_id", "server_round", "level", "noise_mode"):
            if getattr(self, name) != getattr(asked, name):
                out.append(f"{name.replace('_', ' ')} (made for {getattr(self, name)!r}, "
                           f"asked {getattr(asked, name)!r})")
        made, now = dict(self.settings), dict(asked.settings)
        apart = _differing_key_fields(self, asked)
        for key in sorted(set(made) | set(now)):
            if _NAMED_APART.get(key) in apart:
                continue  # named as a key field of its own
            if made.get(key) != now.get(key):
                out.append(f"round setting {key} (made for {made.get(key)!r}, asked "
                           f"{now.get(key)!r})")
        for name, label in (("weights_digest", "global weights (sha256)"),
                            ("roster_digest", "pinned roster (sha256)")):
            if getattr(self, name) != getattr(asked, name):
                out.append(f"{label} (made for {getattr(self, name)[:16] or 'none'}, asked "
                           f"{getattr(asked, name)[:16] or 'none'})")
        for name, label in (("threshold", "t"), ("colluders", "c"), ("honest", "h")):
            if getattr(self, name) != getattr(asked, name):
                out.append(f"{label} (made for {getattr(self, name)}, asked "
                           f"{getattr(asked, name)})")
        return out


# Round settings that are key fields of their own too: a difference is named once, by the field.
_NAMED_APART = {"noise-mode": "noise_mode", "secagg-threshold": "threshold",
                "honest-contributors": "honest"}


def _differing_key_fields(made: ReleaseKey, asked: ReleaseKey) -> set[str]:
    """The key fields of their own in which `made` and `asked` differ."""
    return {name for name in _NAMED_APART.values() if getattr(made, name) != getattr(asked, name)}


@dataclass(frozen=True, slots=True)
class SavedRelease:
    """A release as saved, with the key of the request it was made for."""

    key: ReleaseKey
    release: Release


def _canonical(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)


def weights_digest(weights: NDArrays) -> str:
    """SHA-256 over the arrays' shapes, dtypes and bytes (identifies the global model sent)."""
    digest = hashlib.sha256()
    for array in weights:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype.str}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def shaping_settings(settings: RoundSettings) -> tuple[tuple[str, Any], ...]:
    """The round settings that shape a release, as sorted (wire key, value) pairs."""
    values = settings_to_fields(settings)
    return tuple(sorted((FIELD_KEYS[name], values[FIELD_KEYS[name]])
                        for name in SHAPING_FIELDS))


def release_key(settings: RoundSettings, *, level: str, secure: bool, weights: NDArrays,
                roster_digest: str = "", colluders: int = 0) -> ReleaseKey:
    """The key of the release a request with these settings and weights would get."""
    return ReleaseKey(
        run_id=settings.run_id, server_round=settings.server_round, level=level,
        noise_mode=settings.noise_mode.value, secure=secure,
        settings=shaping_settings(settings), weights_digest=weights_digest(weights),
        roster_digest=roster_digest, threshold=settings.secagg_threshold,
        colluders=colluders, honest=settings.honest_contributors)


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
        across ledger read -> check -> noise draw -> save -> charge. Not re-entrant: do not
        nest it in one thread. The ledger's own lock may be taken inside.
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

    def save(self, key: ReleaseKey, release: Release) -> None:
        """Write the release with its key atomically (temp file, fsync, rename); prune."""
        if release.event.level != key.level:
            raise ValueError(f"a {release.event.level}-level release cannot be saved under a "
                             f"{key.level}-level key")
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": KEY_FORMAT, "key": key.to_json(), "train_loss": release.train_loss,
                "noise_stddev": release.noise_stddev, "level": release.event.level,
                "noise_multiplier": release.event.noise_multiplier,
                "sample_rate": release.event.sample_rate, "steps": release.event.steps,
                "noise_mode": release.event.noise_mode}
        arrays: dict[str, Any] = {f"update_{i:04d}": u for i, u in enumerate(release.update)}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
        path = self._path(key.run_id, key.server_round, key.level)
        # A temp file of its own (two writers never share one), renamed over the release.
        descriptor, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.",
                                           suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(buffer.getvalue())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._prune(keep=path)

    def load(self, run_id: str, server_round: int, level: str) -> SavedRelease | None:
        """Return the release saved for (run, round, level) with its key, or None.

        A missing, unreadable or partly written file, or one without a key (saved by an
        older fedcare), gives None: the ledger then says whether the round was charged.
        """
        path = self._path(run_id, server_round, level)
        try:
            with np.load(path) as stored:
                meta = json.loads(str(stored["meta"]))
                names = sorted(k for k in stored.files if k.startswith("update_"))
                update = [stored[k] for k in names]
            key = ReleaseKey.from_json(meta["key"])
            event = GaussianRoundEvent(level=meta["level"],
                                       noise_multiplier=meta["noise_multiplier"],
                                       sample_rate=meta["sample_rate"], steps=meta["steps"],
                                       noise_mode=meta.get("noise_mode"))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return SavedRelease(key, Release(update=update, event=event,
                                         train_loss=float(meta["train_loss"]),
                                         noise_stddev=float(meta["noise_stddev"])))

    def discard(self, key: ReleaseKey) -> None:
        """Remove the release saved under `key`'s (run, round, level): it will never be sent."""
        self._path(key.run_id, key.server_round, key.level).unlink(missing_ok=True)

    def _prune(self, *, keep: Path) -> None:
        files = sorted(self.directory.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in files[KEEP_ROUNDS:]:
            if stale != keep:
                stale.unlink(missing_ok=True)
