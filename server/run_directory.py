"""The run directory: where a run's config, per-round metrics, model and report are written.

Metrics are appended one row per completed round and flushed to disk at once, so a crash
loses at most the round in flight.
"""

import csv
import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

VERSIONED_PACKAGES = ("fedcare", "flwr", "tensorflow", "keras", "numpy", "opacus", "torch",
                      "cryptography", "scikit-learn")


def default_run_dir(task: str, *, now: datetime | None = None) -> Path:
    """Return ``runs/<UTC timestamp>-<task>`` under the current directory."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path("runs") / f"{stamp}-{task}"


def check_run_dir(out: str | os.PathLike[str] | None, *, task: str, force: bool) -> Path:
    """Resolve the run directory and check it may be written, without creating it.

    Raises
    ------
    FileExistsError
        If the directory exists and is not empty, unless `force` is set; or if it is a file.
    """
    path = (Path(out) if out else default_run_dir(task)).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--out {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise FileExistsError(
            f"--out {path} exists and is not empty; choose another directory or pass --force"
        )
    return path


def prepare_run_dir(out: str | os.PathLike[str] | None, *, task: str, force: bool) -> Path:
    """Resolve and create the run directory (refused as by ``check_run_dir``)."""
    path = check_run_dir(out, task=task, force=force)
    path.mkdir(parents=True, exist_ok=True)
    return path


SOURCES_FILE = "config-sources.json"


def write_config_sources(run_dir: Path, sources: dict[str, str]) -> None:
    """Record where each setting came from (``default``, ``file PATH``, ``flag --NAME``);
    config.json takes it over as its ``sources``.
    """
    write_json_atomic(run_dir / SOURCES_FILE, sources)


def read_config_sources(run_dir: Path) -> dict[str, str] | None:
    """The sources ``write_config_sources`` recorded, or None (e.g. a run under flwr run)."""
    try:
        return dict(json.loads((run_dir / SOURCES_FILE).read_text()))
    except (OSError, ValueError):
        return None


def package_versions() -> dict[str, str]:
    """Return the installed versions of the packages that shape a run's result."""
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary file, fsync it, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class MetricsWriter:
    """Appends one metrics.csv row per completed round, flushed and fsynced at once.

    ``rows`` (a resumed run's rows, as written before) start the file over: a round whose row
    was written after the last checkpoint is dropped, so each round appears exactly once.
    ``on_row`` gets every row the file holds, formatted as in the file, as it is written (the
    run's TensorBoard log).
    """

    def __init__(self, path: Path, columns: list[str], rows: Sequence[dict[str, Any]] = (),
                 *, on_row: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        self.columns = columns
        self.rows: list[dict[str, Any]] = []  # every row written, formatted as in the file
        self._on_row = on_row
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="raise")
            writer.writeheader()
            for row in rows:
                formatted = {c: row.get(c, "") for c in columns}
                writer.writerow(formatted)
                self.rows.append(formatted)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        for formatted in self.rows:
            self._notify(formatted)

    def append(self, row: dict[str, Any]) -> None:
        """Append a row; columns missing from `row` are left empty."""
        formatted = {c: _format(row.get(c, "")) for c in self.columns}
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="raise")
            writer.writerow(formatted)
            handle.flush()
            os.fsync(handle.fileno())
        self.rows.append({c: str(v) for c, v in formatted.items()})
        self._notify(self.rows[-1])

    def _notify(self, row: dict[str, Any]) -> None:
        if self._on_row is not None:
            self._on_row(row)


def _format(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def metrics_columns(metric_names: tuple[str, ...], hospitals: list[str]) -> list[str]:
    """Return metrics.csv's columns in contract order.

    ``round, seconds, participants, pooled_loss``, then for each metric m: ``pooled_m,
    client_avg_m, client_avg_m_hospitals`` (how many hospitals had a finite m: the mean
    leaves out NaN, e.g. the AUC of a one-class test set) and ``<hospital>_m`` for every
    hospital; then ``declined`` (hospitals that declined the round) and
    ``epsilon_patient_max, epsilon_hospital_max`` (the most any hospital has spent so far at
    each level), ``rejected`` (updates that failed validation), ``aborted`` (1: a secure round
    whose sum was not averaged in, the model unchanged); then per hospital
    ``test_rows_<hospital>`` (its test-set size), for classification ``majority_rate_pooled``
    and ``majority_rate_<hospital>`` (accuracy of always predicting the most frequent class),
    and ``epsilon_<hospital>`` (what it has spent so far at the run's DP level); then, for
    each metric m, the 95% interval of a DP evaluation: ``pooled_m_low, pooled_m_high,
    client_avg_m_low, client_avg_m_high`` (empty for exact evaluations).
    """
    columns = ["round", "seconds", "participants", "pooled_loss"]
    for metric in metric_names:
        columns += [f"pooled_{metric}", f"client_avg_{metric}", f"client_avg_{metric}_hospitals"]
        columns += [f"{hospital}_{metric}" for hospital in hospitals]
    columns += ["declined", "epsilon_patient_max", "epsilon_hospital_max", "rejected", "aborted"]
    columns += [f"test_rows_{hospital}" for hospital in hospitals]
    if "accuracy" in metric_names:
        columns += ["majority_rate_pooled", *(f"majority_rate_{h}" for h in hospitals)]
    columns += [f"epsilon_{hospital}" for hospital in hospitals]
    return columns + [f"{scope}_{metric}_{end}" for metric in metric_names
                      for scope in ("pooled", "client_avg") for end in ("low", "high")]
