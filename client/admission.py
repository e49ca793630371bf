"""Whether this hospital takes part in a round, decided before any training (no Flower here).

A hospital refuses, with a reason the server logs, when the server runs another fedcare
version, when its node config is invalid, when its schema differs from the run's (task csv,
both hashes named), or when its data file fails the schema check. The reason sent for bad data
is counts by kind only: rows and cell values stay at the hospital (its own log lists them,
and ``fedcare validate-data`` shows them in full).
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from client.hospital import (
    hospital_index,
    ledger_split_key,
    load_csv_data,
    load_hospital,
    load_schema,
)
from client.node_config import NodeConfig
from client.privacy import default_ledger_path
from common.data_validation import summarize
from common.schema import SchemaError
from common.tasks import CSV_TASK_NAME, HospitalData, TaskSpec, get_task
from common.tasks.csv_task import CsvHospital, DataFileRejected, csv_task_spec
from common.version import fedcare_version
from common.wire.modes import Normalisation
from common.wire.settings import RoundSettings

logger = logging.getLogger(__name__)

RUN_SCHEMA_SHA256 = "csv.schema-sha256"


@dataclass(frozen=True, slots=True)
class Admitted:
    """A hospital that takes part in the round, with what it takes part with.

    Attributes
    ----------
    index : int
        The hospital's index (node config ``partition-id``).
    name : str
        The name the server knows it by (metrics.csv): the task's name for the index.
    task : TaskSpec
        The round's task, as this install serves it.
    data : HospitalData
        The hospital's data, preprocessed (``data.name`` is its ledger name).
    node : NodeConfig
        The hospital's validated node config.
    csv : CsvHospital | None
        Task csv: the data with its fitted preprocessing; None for a built-in task (no file,
        nothing fitted).
    data_sha256 : str
        Task csv: the SHA-256 of the data file (hex); empty for a built-in task.
    """

    index: int
    name: str
    task: TaskSpec
    data: HospitalData
    node: NodeConfig
    csv: CsvHospital | None = None
    data_sha256: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """A hospital that does not take part in the round, and why.

    Attributes
    ----------
    index : int
        The hospital's index (node config ``partition-id``).
    name : str
        The name the server knows it by (``hospital-<index>`` if the task cannot name it).
    reason : str
        Why it refuses, for the server's log (counts by kind only for bad data, no values).
    """

    index: int
    name: str
    reason: str


Admission = Admitted | Refused
"""A hospital's answer to a round's settings: admitted (with what) or refused (why)."""


def version_refusal(server_version: object, own_version: str) -> str:
    """Return why to refuse a server of another fedcare version ('' when they match)."""
    if server_version is None:
        return (f"the server sent no fedcare version (this hospital runs fedcare {own_version}); "
                "server and hospitals must run the same version")
    if str(server_version) != own_version:
        return (f"the server runs fedcare {server_version} but this hospital runs fedcare "
                f"{own_version}; server and hospitals must run the same version")
    return ""


def schema_refusal(own_sha256: str, run_sha256: object) -> str:
    """Return why to refuse a run whose schema hash differs from ours ('' when equal)."""
    if str(run_sha256 or "") != own_sha256:
        return (f"this hospital's schema has sha256 {own_sha256}, but the run config's "
                f"csv.schema-sha256 is {str(run_sha256 or '') or '(empty)'}: the consortium's "
                "schema files differ")
    return ""


def normalisation_refusal(settings: RoundSettings, task: TaskSpec) -> str:
    """Why to refuse the run's normalisation ('' when this hospital's own copy agrees).

    Shared normalisation: the server's digest must be that of the task's (or schema's) public
    constants as this hospital holds them, so no server can hand a hospital statistics of its
    own making. Per-hospital z-scoring needs no digest (and is listed as not covered).
    """
    if settings.normalisation == Normalisation.PER_HOSPITAL:
        return ("" if task.per_hospital_scaling else
                f"task {task.name!r} has no per-hospital normalisation (its features have a "
                "fixed public scale)")
    if task.scaling is None:
        return f"task {task.name!r} declares no public normalisation constants"
    own = task.scaling().digest
    if settings.normalisation_digest != own:
        return (f"the server states shared normalisation statistics with digest "
                f"{settings.normalisation_digest[:16] or '(none)'}, but this hospital's copy "
                f"of the {task.name} constants has {own[:16]}: it normalises with no "
                "statistics but those it holds itself")
    return ""


def admit(*, settings: RoundSettings, node_config: Mapping[str, Any],
          run_config: Mapping[str, Any]) -> Admission:
    """Decide whether this hospital takes part in the round `settings` describes.

    Parameters
    ----------
    settings : RoundSettings
        The round's settings from the server, already unpacked and validated.
    node_config, run_config : Mapping
        Flower's node config (the hospital's own) and run config.

    Returns
    -------
    Admitted | Refused
        Admitted with its task, data and node config (task csv: also the fitted
        preprocessing and the file's hash), or Refused with the reason for the server.

    Raises
    ------
    ValueError
        If the node cannot tell which hospital it is (partition-id), so that it cannot even
        name itself in a refusal.
    """
    hospitals = settings.hospitals
    index = hospital_index(dict(node_config), hospitals=hospitals)
    task_name = settings.task
    try:
        name = (f"hospital-{index}" if task_name == CSV_TASK_NAME
                else get_task(task_name).hospital_names(hospitals)[index])
    except (ValueError, IndexError) as error:  # a task or size this install cannot serve
        return Refused(index, f"hospital-{index}", str(error))
    refusal = version_refusal(settings.fedcare_version, fedcare_version())
    if refusal:
        return Refused(index, name, refusal)
    try:
        node = NodeConfig.from_node_config(node_config)
    except ValueError as error:
        return Refused(index, name, str(error))
    seed = settings.seed
    if task_name != CSV_TASK_NAME:
        refusal = normalisation_refusal(settings, get_task(task_name))
        if refusal:
            return Refused(index, name, refusal)
        try:
            data = load_hospital(task_name, hospitals, index, seed=seed,
                                 partition=settings.partition.value,
                                 alpha=settings.dirichlet_alpha,
                                 normalisation=settings.normalisation.value,
                                 missing_indicator=settings.missing_indicator)
        except ValueError as error:  # a split or normalisation the task's data cannot give
            return Refused(index, name, str(error))
        if node.hospital_name:
            data = replace(data, name=node.hospital_name)
        return Admitted(index, name, task=get_task(task_name), data=data, node=node)
    return _admit_csv(index, name, node, run_config, settings)


def _admit_csv(index: int, name: str, node: NodeConfig, run_config: Mapping[str, Any],
               settings: RoundSettings) -> Admission:
    try:
        data_path, schema_path = node.csv_files()
        schema = load_schema(schema_path)
    except (SchemaError, ValueError) as error:
        return Refused(index, name, str(error))
    refusal = schema_refusal(schema.sha256, run_config.get(RUN_SCHEMA_SHA256))
    if not refusal:
        try:
            refusal = normalisation_refusal(settings, csv_task_spec(schema))
        except ValueError as error:  # shared normalisation without the schema's ranges
            refusal = str(error)
    if refusal:
        return Refused(index, name, refusal)
    try:
        hospital = node.hospital_name or name
        ledger = node.ledger_path or default_ledger_path(hospital)
        loaded = load_csv_data(data_path, schema, name=hospital,
                               normalisation=settings.normalisation.value,
                               missing_indicator=settings.missing_indicator,
                               split_key=ledger_split_key(ledger, hospital))
    except DataFileRejected as error:
        # The hospital's own log gets rows and columns (no cell values); the server a summary.
        for problem in error.problems:
            logger.warning("data file %s: %s: %s", error.path, problem.location, problem.kind)
        return Refused(index, name, f"its data file fails the schema check: "
                       f"{summarize(error.problems)}; the hospital can list them with "
                       "`fedcare validate-data --schema SCHEMA DATA`")
    except ValueError as error:  # e.g. nothing to fit a column's statistics on
        return Refused(index, name, f"its data file {data_path}: {error}")
    return Admitted(index, name, task=csv_task_spec(schema), data=loaded.hospital.data,
                    node=node, csv=loaded.hospital, data_sha256=loaded.data_sha256)
