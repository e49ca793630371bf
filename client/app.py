"""The hospital's ClientApp (Flower Message API): thin handlers around local training.

Each handler unpacks the round's settings and global weights, calls the Keras trainer and
replies with the update (local minus global weights) or with evaluation statistics. Nothing
but the update, a few scalars and test-set statistics ever leaves the hospital.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from common import record_keys as keys
from common.metrics import evaluation_statistics
from common.tasks import get_task
from client.hospital import hospital_index, load_hospital
from client.training import get_trainer

app = ClientApp()


def _hospital(msg: Message, context: Context):  # noqa: ANN202 - HospitalData
    config = msg.content[keys.CONFIG]
    hospitals = int(config[keys.HOSPITALS])
    index = hospital_index(dict(context.node_config), hospitals=hospitals)
    data = load_hospital(
        str(config[keys.TASK]), hospitals, index, seed=int(config[keys.SEED]),
        partition=str(config[keys.PARTITION]), alpha=float(config[keys.DIRICHLET_ALPHA]),
    )
    return index, data


def _identity(index: int, name: str) -> ConfigRecord:
    return ConfigRecord({keys.HOSPITAL_NAME: name, keys.HOSPITAL_INDEX: index})


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train on the hospital's data from the global weights; reply with the update."""
    config = msg.content[keys.CONFIG]
    index, data = _hospital(msg, context)
    task = get_task(str(config[keys.TASK]))
    global_weights = msg.content[keys.ARRAYS].to_numpy_ndarrays()
    server_round = int(config[keys.SERVER_ROUND])
    # Per-round randomness from (seed, round, hospital): reproducible, with no global reseeding.
    rng = np.random.default_rng([int(config[keys.SEED]), server_round, index])
    local_weights, train_loss = get_trainer(task).fit(
        global_weights, data.x_train, data.y_train,
        epochs=int(config[keys.LOCAL_EPOCHS]), batch_size=int(config[keys.BATCH_SIZE]),
        learning_rate=float(config[keys.LEARNING_RATE]), rng=rng,
    )
    update = [(l - g).astype(g.dtype) for l, g in zip(local_weights, global_weights, strict=True)]
    content = RecordDict({
        keys.ARRAYS: ArrayRecord(update),
        keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: data.num_train, keys.TRAIN_LOSS: train_loss}),
        keys.HOSPITAL: _identity(index, data.name),
    })
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global weights on the hospital's test set; reply with its statistics."""
    config = msg.content[keys.CONFIG]
    index, data = _hospital(msg, context)
    task = get_task(str(config[keys.TASK]))
    predictions = get_trainer(task).predict(msg.content[keys.ARRAYS].to_numpy_ndarrays(), data.x_test)
    stats = evaluation_statistics(task.kind, data.y_test, predictions, target_scale=task.target_scale)
    content = RecordDict({
        keys.STATISTICS: ArrayRecord({k: Array(np.asarray(v)) for k, v in stats.items()}),
        keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: data.num_test}),
        keys.HOSPITAL: _identity(index, data.name),
    })
    return Message(content=content, reply_to=msg)
