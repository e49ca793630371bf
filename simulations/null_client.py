"""A ClientApp that does no work: it returns its input, to measure Flower's own round floor.

Same message pattern as fedcare's ClientApp (train, then evaluate, each round), with replies
of the same shape, so a benchmark can compare a real round with the framework's floor.

In deployment Flower imports the ClientApp afresh for every message, so this module imports
only Flower and numpy. What a reply needs from fedcare's tasks (the hospitals' names, the
statistics of a fixed two-row prediction) comes from ``null_client_facts.json`` next to this
file when present (``write_facts``; the deployment benchmark writes it into its app copy),
else it is computed with ``common.tasks`` (scikit-learn; fine in simulation, where the module
is imported once).
"""

import json
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from common import record_keys as keys

FACTS_FILE = Path(__file__).with_name("null_client_facts.json")

app = ClientApp()


def task_facts(task: str, hospitals: int) -> dict:
    """``{"names": [...], "statistics": {key: nested list}}`` of `task` with `hospitals`."""
    from common.metrics import evaluation_statistics
    from common.tasks import get_task

    spec = get_task(task)
    outputs = np.array([[0.2], [0.8]]) if spec.kind != "multiclass" else np.eye(2, 10)
    stats = evaluation_statistics(spec.kind, np.array([0.0, 1.0]), outputs)
    return {"names": spec.hospital_names(hospitals),
            "statistics": {k: np.asarray(v).tolist() for k, v in stats.items()}}


def write_facts(directory: Path, task: str, hospitals: int) -> Path:
    """Write `task`'s facts for `hospitals` as ``null_client_facts.json`` into `directory`."""
    path = directory / FACTS_FILE.name
    path.write_text(json.dumps({f"{task}/{hospitals}": task_facts(task, hospitals)}))
    return path


def _facts(msg: Message) -> dict:
    config = msg.content[keys.CONFIG]
    task, hospitals = str(config[keys.TASK]), int(config[keys.HOSPITALS])
    if FACTS_FILE.is_file():
        stored = json.loads(FACTS_FILE.read_text()).get(f"{task}/{hospitals}")
        if stored is not None:
            return stored
    return task_facts(task, hospitals)


def _identity(msg: Message, context: Context, facts: dict) -> ConfigRecord:
    index = int(context.node_config["partition-id"])
    return ConfigRecord({keys.HOSPITAL_NAME: facts["names"][index], keys.HOSPITAL_INDEX: index})


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Reply with the received arrays unchanged."""
    content = RecordDict({
        keys.ARRAYS: msg.content[keys.ARRAYS],
        keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 1, keys.TRAIN_LOSS: 0.0}),
        keys.HOSPITAL: _identity(msg, context, _facts(msg)),
    })
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Reply with the statistics of a fixed two-row prediction."""
    facts = _facts(msg)
    content = RecordDict({
        keys.STATISTICS: ArrayRecord({k: Array(np.asarray(v, dtype=np.float64))
                                      for k, v in facts["statistics"].items()}),
        keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 2}),
        keys.HOSPITAL: _identity(msg, context, facts),
    })
    return Message(content=content, reply_to=msg)
