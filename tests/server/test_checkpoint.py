"""The server checkpoint: exact round trip, atomic files, checksums, fallback to the last good."""

import hashlib
import json
import logging

import numpy as np
import pytest

from server.checkpoint import (
    KEEP,
    Checkpoint,
    CheckpointError,
    load_latest_checkpoint,
    read_checkpoint,
    save_checkpoint,
)


def _checkpoint(round_number: int, seed: int = 0) -> Checkpoint:
    rng = np.random.default_rng(seed + round_number)
    weights = [rng.normal(size=(13, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    moments = {"m": [w * 0.5 for w in weights], "v": [w**2 for w in weights]}
    return Checkpoint(round=round_number, run_id="abc123", run_config={"task": "heart-disease"},
                      weights=weights, optimizer_state=moments,
                      metrics_rows=[{"round": str(r), "pooled_loss": "0.5"}
                                    for r in range(1, round_number + 1)],
                      extra={"epsilon_spent": {"va": {"patient": 0.25,
                                                      "budget_epsilon": float("inf")}},
                             "pending": None})


def _assert_same(a: Checkpoint, b: Checkpoint) -> None:
    assert (a.round, a.run_id, a.run_config, a.metrics_rows, a.extra) == \
        (b.round, b.run_id, b.run_config, b.metrics_rows, b.extra)
    for x, y in zip(a.weights, b.weights, strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    assert sorted(a.optimizer_state) == sorted(b.optimizer_state)
    for name in a.optimizer_state:
        for x, y in zip(a.optimizer_state[name], b.optimizer_state[name], strict=True):
            np.testing.assert_array_equal(x, y)


def test_round_trip_is_exact(tmp_path):
    saved = _checkpoint(3)
    save_checkpoint(tmp_path, saved)
    _assert_same(load_latest_checkpoint(tmp_path), saved)


def test_latest_wins_and_only_the_newest_are_kept(tmp_path):
    for r in range(1, 7):
        save_checkpoint(tmp_path, _checkpoint(r))
    assert load_latest_checkpoint(tmp_path).round == 6
    assert sorted(p.name for p in tmp_path.glob("*.json")) == \
        [f"round-{r:04d}.json" for r in range(7 - KEEP, 7)]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


@pytest.mark.parametrize("damage", ["flip-array-byte", "truncate-arrays", "edit-manifest",
                                    "truncate-manifest", "delete-arrays", "stale-arrays"])
def test_corrupted_latest_falls_back_to_previous_with_warning(tmp_path, caplog, damage):
    save_checkpoint(tmp_path, _checkpoint(1))
    save_checkpoint(tmp_path, _checkpoint(2))
    arrays, manifest = tmp_path / "round-0002.npz", tmp_path / "round-0002.json"
    if damage == "flip-array-byte":
        data = bytearray(arrays.read_bytes())
        data[len(data) // 2] ^= 0xFF
        arrays.write_bytes(bytes(data))
    elif damage == "truncate-arrays":
        arrays.write_bytes(arrays.read_bytes()[:100])
    elif damage == "edit-manifest":
        stored = json.loads(manifest.read_text())
        stored["manifest"]["round"] = 7
        manifest.write_text(json.dumps(stored))
    elif damage == "truncate-manifest":
        manifest.write_text(manifest.read_text()[:50])
    elif damage == "stale-arrays":  # the manifest's rename survived a crash, the .npz's not
        arrays.write_bytes((tmp_path / "round-0001.npz").read_bytes())
    else:
        arrays.unlink()
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path, 2)
    with caplog.at_level(logging.WARNING, logger="server.checkpoint"):
        loaded = load_latest_checkpoint(tmp_path)
    _assert_same(loaded, _checkpoint(1))
    assert "skipping checkpoint of round 2" in caplog.text


def test_partial_write_without_manifest_is_ignored(tmp_path):
    save_checkpoint(tmp_path, _checkpoint(1))
    (tmp_path / "round-0002.npz").write_bytes(b"half a file")  # killed before the manifest
    assert load_latest_checkpoint(tmp_path).round == 1


def test_no_intact_checkpoint_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_latest_checkpoint(tmp_path)
    save_checkpoint(tmp_path, _checkpoint(1))
    (tmp_path / "round-0001.npz").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        load_latest_checkpoint(tmp_path)


def test_a_format_1_checkpoint_is_still_read(tmp_path):
    """Checkpoints written before format 2 (checksum over indent=1 JSON) still resume."""
    save_checkpoint(tmp_path, _checkpoint(2))
    path = tmp_path / "round-0002.json"
    manifest = {**json.loads(path.read_text())["manifest"], "format": 1}
    body = json.dumps(manifest, sort_keys=True, indent=1, allow_nan=True)
    path.write_text(json.dumps({"checksum": hashlib.sha256(body.encode()).hexdigest(),
                                "manifest": manifest}, sort_keys=True, indent=1, allow_nan=True))
    _assert_same(read_checkpoint(tmp_path, 2), _checkpoint(2))
    manifest["round"] = 3  # and its checksum still guards it
    path.write_text(json.dumps({"checksum": hashlib.sha256(body.encode()).hexdigest(),
                                "manifest": manifest}, sort_keys=True, indent=1, allow_nan=True))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint(tmp_path, 2)

