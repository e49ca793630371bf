"""A ClientApp that does no work: it returns its input, to measure Flower's own round floor.

Same message pattern as fedcare's ClientApp (train, then evaluate, each round), with replies
of the same shape, so a benchmark can compare a real round with the framework's floor.
"""

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from common import record_keys as keys
from common.metrics import evaluation_statistics
from common.tasks import get_task
from client.hospital import hospital_index

app = ClientApp()


def _identity(msg: Message, context: Context) -> ConfigRecord:
    config = msg.content[keys.CONFIG]
    hospitals = int(config[keys.HOSPITALS])
    index = hospital_index(dict(context.node_config), hospitals=hospitals)
    name = get_task(str(config[keys.TASK])).hospital_names(hospitals)[index]
    return ConfigRecord({keys.HOSPITAL_NAME: name, keys.HOSPITAL_INDEX: index})


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Reply with the received arrays unchanged."""
    content = RecordDict({
        keys.ARRAYS: msg.content[keys.ARRAYS],
        keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 1, keys.TRAIN_LOSS: 0.0}),
        keys.HOSPITAL: _identity(msg, context),
    })
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Reply with the statistics of a fixed two-row prediction."""
    kind = get_task(str(msg.content[keys.CONFIG][keys.TASK])).kind
    outputs = np.array([[0.2], [0.8]]) if kind != "multiclass" else np.eye(2, 10)
    stats = evaluation_statistics(kind, np.array([0.0, 1.0]), outputs)
    content = RecordDict({
        keys.STATISTICS: ArrayRecord({k: Array(np.asarray(v)) for k, v in stats.items()}),
        keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 2}),
        keys.HOSPITAL: _identity(msg, context),
    })
    return Message(content=content, reply_to=msg)
