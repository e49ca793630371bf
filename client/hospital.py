"""Which hospital this node is, and its data (loaded once per process and task settings)."""

from functools import lru_cache
from typing import Any

from common.tasks import HospitalData, get_task, load_task_hospitals

PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"


def hospital_index(node_config: dict[str, Any], *, hospitals: int) -> int:
    """Return this node's hospital index from Flower's simulation node config.

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
    num_nodes = int(node_config.get(NUM_PARTITIONS, hospitals))
    if num_nodes != hospitals:
        raise ValueError(
            f"the federation has {num_nodes} nodes but the run config says hospitals={hospitals}; "
            f"start it with {hospitals} nodes (flwr run: --federation-config \"num-supernodes={hospitals}\")"
        )
    return int(node_config[PARTITION_ID])


@lru_cache(maxsize=16)
def load_hospital(
    task: str, hospitals: int, index: int, *, seed: int, partition: str, alpha: float
) -> HospitalData:
    """Return hospital `index` of the task split into `hospitals` (cached per process)."""
    spec = get_task(task)
    return load_task_hospitals(spec, hospitals, seed=seed, partition=partition, alpha=alpha)[index]
