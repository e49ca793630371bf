"""A ClientApp that does no work, to measure Flower's own round floor (benchmarks only).

Same message pattern as fedcare's ClientApp (train, then evaluate, each round), with replies
of the same shape: a train reply carries a ZERO update with the shapes and dtypes of the
weights it received (the server adds updates to its model, so the null model stays where it
started), zero epsilon spent, and the example count and loss only when the run has no DP, as
a real hospital's reply. A zero update passes the server's norm check in every DP mode.

In deployment Flower imports the ClientApp afresh for every message, so this module imports
only Flower and numpy. What a reply needs from fedcare's tasks (the hospitals' names, the
statistics of a fixed two-row prediction) comes from ``null_client_facts.json`` next to this
file when present (``write_facts``; the deployment benchmark writes it into its app copy),
else it is computed with ``common.tasks`` (scikit-learn; fine in simulation, where the module
is imported once).

The wire format lives in two small functions, ``read_request`` and ``build_reply``: they are
the only code here that knows the record keys.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from common import record_keys as keys

FACTS_FILE = Path(__file__).with_name("null_client_facts.json")

app = ClientApp()


@dataclass(frozen=True, slots=True)
class NullRequest:
    """What the null client needs from a request: the run's task, size and DP mode.

    Attributes
    ----------
    shapes : list[tuple[tuple[int, ...], str]]
        Shape and dtype of each array the message carries, in order.
    """

    task: str
    hospitals: int
    dp_mode: str
    shapes: list[tuple[tuple[int, ...], str]]


def read_request(msg: Message) -> NullRequest:
    """Unpack the request's settings and the shapes of its weights (not their values)."""
    config = msg.content[keys.CONFIG]
    arrays = msg.content[keys.ARRAYS] if keys.ARRAYS in msg.content else ArrayRecord()
    return NullRequest(task=str(config[keys.TASK]), hospitals=int(config[keys.HOSPITALS]),
                       dp_mode=str(config.get(keys.DP_MODE, "none")),
                       shapes=[(tuple(a.shape), a.dtype) for a in arrays.values()])


def build_reply(msg: Message, *, name: str, index: int, dp_mode: str,
                update: list[np.ndarray] | None = None,
                statistics: dict[str, np.ndarray] | None = None) -> Message:
    """Pack a train reply (`update`) or an evaluate reply (`statistics`) as fedcare does."""
    content = RecordDict({keys.HOSPITAL: ConfigRecord({keys.HOSPITAL_NAME: name,
                                                       keys.HOSPITAL_INDEX: index})})
    if update is not None:
        metrics: dict[str, int | float] = {keys.EPSILON_PATIENT: 0.0, keys.EPSILON_HOSPITAL: 0.0}
        if dp_mode == "none":  # DP replies reveal no counts and no loss
            metrics |= {keys.NUM_EXAMPLES: 1, keys.TRAIN_LOSS: 0.0}
        content[keys.ARRAYS] = ArrayRecord(update)
        content[keys.METRICS] = MetricRecord(metrics)
    if statistics is not None:
        content[keys.STATISTICS] = ArrayRecord({k: Array(v) for k, v in statistics.items()})
    return Message(content=content, reply_to=msg)


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


def _facts(request: NullRequest) -> dict:
    if FACTS_FILE.is_file():
        stored = json.loads(FACTS_FILE.read_text()).get(f"{request.task}/{request.hospitals}")
        if stored is not None:
            return stored
    return task_facts(request.task, request.hospitals)


def _who(context: Context, facts: dict) -> tuple[str, int]:
    index = int(context.node_config["partition-id"])
    return facts["names"][index], index


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Reply with a zero update of the received weights' shapes and dtypes."""
    request = read_request(msg)
    name, index = _who(context, _facts(request))
    update = [np.zeros(shape, dtype=dtype) for shape, dtype in request.shapes]
    return build_reply(msg, name=name, index=index, dp_mode=request.dp_mode, update=update)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Reply with the statistics of a fixed two-row prediction."""
    request = read_request(msg)
    facts = _facts(request)
    name, index = _who(context, facts)
    statistics = {k: np.asarray(v, dtype=np.float64) for k, v in facts["statistics"].items()}
    return build_reply(msg, name=name, index=index, dp_mode=request.dp_mode,
                       statistics=statistics)
