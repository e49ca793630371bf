"""A ClientApp that does no work, to measure Flower's own round floor (benchmarks only).

Same message pattern as fedcare's ClientApp (train with the previous round's evaluation folded
in, or train then evaluate when unfolded), with replies
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

Messages go through fedcare's wire format (``common.wire``: numpy and Flower only) in two
small functions, ``read_request`` and ``build_reply``; the hospitals' own reply builders
(``client.replies``) import TensorFlow, so they are not used here.
"""

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.identity_proof import identity_proof_mod, remember_signing_key
from common.wire.modes import DpMode
from common.wire.records import pack_reply, reply_claim, unpack_request
from common.wire.replies import (
    EvaluateReply,
    HospitalIdentity,
    PrivacyReport,
    Reply,
    RoundRef,
    TrainReply,
    check_manifest,
)
from common.wire.settings import RoundSettings

FACTS_FILE = Path(__file__).with_name("null_client_facts.json")
# Nothing spent, and no budget of its own (the null client keeps no ledger).
NOTHING_SPENT = PrivacyReport(epsilon_patient=0.0, epsilon_hospital=0.0,
                              budget_epsilon=math.inf, budget_delta=0.0)



def read_request(msg: Message) -> tuple[RoundSettings, list[np.ndarray]]:
    """Unpack the request (``common.wire``): the round's settings and the global weights.

    Raises
    ------
    common.wire.fields.WireFormatError
        If the message is malformed (a benchmark's bug: Flower turns it into an error reply).
    """
    request = unpack_request(msg.content)
    if request.settings is None:
        raise ValueError("the null client needs the round settings in every request")
    return request.settings, request.weights or []


def build_reply(msg: Message, settings: RoundSettings, *, name: str, index: int,
                update: list[np.ndarray] | None = None,
                statistics: dict[str, np.ndarray] | None = None) -> Message:
    """Pack a train reply (`update`) or an evaluate reply (`statistics`) as a hospital does.

    A train reply carries, as the run's mode's manifest asks: the update; under DP the epsilon
    spent (none); without DP an example count and a loss.
    """
    identity = HospitalIdentity(name, index)
    answers = RoundRef(settings.run_id, settings.server_round)
    reply: Reply
    if update is not None:
        private = settings.dp_mode != DpMode.NONE
        reply = TrainReply(identity, answers, update=update,
                           privacy=NOTHING_SPENT if private else None,
                           num_examples=None if private else 1,
                           train_loss=None if private else 0.0, statistics=statistics)
        check_manifest(reply, settings.dp_mode, settings.noise_mode, settings.secagg_enabled)
    else:
        reply = EvaluateReply(identity, answers, statistics or {})
    return Message(content=pack_reply(reply), reply_to=msg)


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


def _facts(settings: RoundSettings) -> dict:
    if FACTS_FILE.is_file():
        stored = json.loads(FACTS_FILE.read_text()).get(f"{settings.task}/{settings.hospitals}")
        if stored is not None:
            return stored
    return task_facts(settings.task, settings.hospitals)


def _who(context: Context, facts: dict) -> tuple[str, int]:
    index = int(context.node_config["partition-id"])
    return facts["names"][index], index


def train(msg: Message, context: Context) -> Message:
    """Reply with a zero update of the received weights' shapes and dtypes."""
    settings, weights = read_request(msg)
    facts = _facts(settings)
    name, index = _who(context, facts)
    update = [np.zeros_like(w) for w in weights]
    statistics = (_statistics(facts) if settings.evaluate_received else None)  # folded evaluation
    return build_reply(msg, settings, name=name, index=index, update=update,
                       statistics=statistics)


def _statistics(facts: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in facts["statistics"].items()}


def evaluate(msg: Message, context: Context) -> Message:
    """Reply with the statistics of a fixed two-row prediction."""
    settings, _ = read_request(msg)
    facts = _facts(settings)
    name, index = _who(context, facts)
    return build_reply(msg, settings, name=name, index=index, statistics=_statistics(facts))


def build_null_app(mods: list[object] | tuple[object, ...] = (),
                   key_dir: Path | None = None) -> ClientApp:
    """The null ClientApp, with Flower `mods` around its handlers (e.g. a benchmark's timer).

    `key_dir`: the run's ephemeral roster directory (``fedcare simulate`` makes one for 3+
    hospitals, ``simulations.engine.ephemeral_roster.roster_dir``); each reply then carries the
    identity proof a simulated hospital gives (``client.identity_proof``), which the server needs
    to bind a node to its hospital. Without it, replies are unproved (runs of fewer than 3).
    """
    proof: list[object] = []
    if key_dir is not None:
        proof = [identity_proof_mod, functools.partial(_remember_key, key_dir)]
    null_app = ClientApp(mods=[*mods, *proof])  # type: ignore[list-item]
    null_app.train()(train)
    null_app.evaluate()(evaluate)
    return null_app


def _remember_key(key_dir: Path, msg: Message, context: Context,
                  call_next: Callable[[Message, Context], Message]) -> Message:
    """Remember the replying hospital's key, so the identity-proof mod around it signs."""
    reply = call_next(msg, context)
    claim = None if reply.has_error() else reply_claim(reply.content)
    if claim is not None:
        name = claim[0].name
        remember_signing_key(context, name, key_dir / f"{name}.key")
    return reply


app = build_null_app()
