"""Which hospital this node is, and its data (split once per process and task settings).

Task csv files are keyed by path, size and modification time, so a file edited between runs
is read (and checked) again.
"""

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from common.schema import DataSchema
from common.tasks import HospitalData, get_task, load_task_hospitals
from common.tasks.csv_task import CsvHospital, file_sha256, load_csv_hospital

PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"


def hospital_index(node_config: dict[str, Any], *, hospitals: int) -> int:
    """Return this node's hospital index from its node config (simulation or deployment).

    Raises
    ------
    ValueError
        If the node config has no partition id, or the federation has a different number of
        nodes than the run's hospitals (each node must be exactly one hospital).
    """
    if PARTITION_ID not in node_config:
        raise ValueError(
            "node config has no 'partition-id': this node does not know which hospital it is"
        )
    for key in (PARTITION_ID, NUM_PARTITIONS):
        value = node_config.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int | str) \
                or not str(value).strip().isdigit():
            raise ValueError(f"node config {key} must be an integer >= 0, got {value!r}")
    num_nodes = int(node_config.get(NUM_PARTITIONS, hospitals))
    if num_nodes != hospitals:
        raise ValueError(
            f"the federation has {num_nodes} nodes but the run config says hospitals={hospitals}; "
            f"start it with {hospitals} nodes (flwr run: --federation-config "
            f"\"num-supernodes={hospitals}\"; deployment: num-partitions={hospitals} in every "
            "hospital's node config)"
        )
    index = int(node_config[PARTITION_ID])
    if index >= hospitals:
        raise ValueError(f"node config partition-id must be < the run's hospitals={hospitals}, "
                         f"got {index}")
    return index


def load_hospital(
    task: str, hospitals: int, index: int, *, seed: int, partition: str, alpha: float,
    normalisation: str = "public", missing_indicator: bool = True,
) -> HospitalData:
    """Return hospital `index` of the task split into `hospitals`, normalised as asked.

    The split is made once per process and settings (``task_split``) and shared by every
    hospital this process serves: a Ray worker serving 50 simulated hospitals splits once.
    """
    return task_split(task, hospitals, seed=seed, partition=partition, alpha=alpha,
                      normalisation=normalisation, missing_indicator=missing_indicator)[index]


@lru_cache(maxsize=4)
def task_split(
    task: str, hospitals: int, *, seed: int, partition: str, alpha: float,
    normalisation: str = "public", missing_indicator: bool = True,
) -> tuple[HospitalData, ...]:
    """Every hospital of the task split into `hospitals`, cached per process by all settings.

    Raises
    ------
    ValueError
        If the task cannot be split so (too many hospitals, no Dirichlet draw that keeps each
        hospital's minimum of rows) or normalised so, naming the task.
    """
    spec = get_task(task)
    return tuple(load_task_hospitals(spec, hospitals, seed=seed, partition=partition,
                                     alpha=alpha, normalisation=normalisation,
                                     missing_indicator=missing_indicator))


def _file_key(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """Return (resolved path, size, mtime in ns): it changes when the file is replaced or edited."""
    resolved = Path(path).resolve()
    status = resolved.stat()
    return str(resolved), status.st_size, status.st_mtime_ns


def load_schema(path: str | os.PathLike[str]) -> DataSchema:
    """Load the hospital's schema (cached per process and file version); raises SchemaError."""
    return _load_schema(_file_key(path))


@lru_cache(maxsize=4)
def _load_schema(key: tuple[str, int, int]) -> DataSchema:
    return DataSchema.load(key[0])


@dataclass(frozen=True, slots=True)
class LoadedCsv:
    """A hospital's checked and preprocessed CSV file, and the SHA-256 of its bytes."""

    hospital: CsvHospital
    data_sha256: str


def load_csv_data(
    data_path: str | os.PathLike[str], schema: DataSchema, *, name: str,
    normalisation: str = "public", missing_indicator: bool = True, split_key: bytes = b"",
) -> LoadedCsv:
    """Check, split and preprocess the hospital's CSV (cached per process and file version).

    Raises
    ------
    common.tasks.csv_task.DataFileRejected
        If the file fails the schema check (every problem listed).
    common.tasks.csv_preprocessing.PreprocessingError
        If it cannot be normalised so (a ValueError naming the column).
    """
    return _load_csv(_file_key(data_path), schema, name, normalisation, missing_indicator,
                     split_key)


@lru_cache(maxsize=4)
def _load_csv(key: tuple[str, int, int], schema: DataSchema, name: str, normalisation: str,
              missing_indicator: bool, split_key: bytes) -> LoadedCsv:
    return LoadedCsv(load_csv_hospital(key[0], schema, name=name, normalisation=normalisation,
                                       missing_indicator=missing_indicator,
                                       split_key=split_key),
                     file_sha256(key[0]))


def ledger_split_key(ledger_path: Path, hospital: str) -> bytes:
    """The split key the hospital's ledger holds (empty when there is no readable ledger:
    the split is then an unkeyed hash, and a DP round declines for the ledger anyway).
    """
    from client.privacy import default_head_path
    from common.dp.ledger import PrivacyLedger
    from common.errors import LedgerError

    if not ledger_path.is_file():
        return b""
    try:
        return PrivacyLedger.read(ledger_path, default_head_path=default_head_path(hospital)
                                  ).split_key
    except LedgerError:
        return b""
