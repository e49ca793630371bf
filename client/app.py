"""The hospital's ClientApp (Flower Message API): thin handlers around the local round.

Handlers unpack the round's settings and global weights, call ``client.local_round`` (budget,
training, privacy, ledger) and pack the reply: the update, or the reason the hospital declined,
plus its epsilon spent. Privacy settings come from the hospital's own configuration through a
provider, never from the message.

Before any work a hospital checks that it takes part (``client.admission``): the server's
fedcare version, its node config (``client.node_config`` documents the keys), and for task
csv its schema's hash and its data file. A refusal is a ``declined`` reply with the reason,
which the server logs and reports, in every handler.
"""

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from client.app_pinning import verify_app_mod
from client.admission import Admission, admit
from client.node_config import NodeConfig
from client.local_round import RoundRequest, RoundResult, train_round
from client.secure_aggregation import register_secagg_actions, start_round
from client.privacy import HospitalPrivacy
from client.training import get_trainer
from common import record_keys as keys
from common.config import DEFAULTS
from common.metrics import evaluation_statistics
from common.secagg.update_vector import encode_update, rounding_bound
from common.tasks import HospitalData, TaskSpec
from common.tasks.csv_preprocessing import preprocessing_path

PrivacyProvider = Callable[[Context, HospitalData], HospitalPrivacy]


def privacy_from_context(context: Context, hospital: HospitalData) -> HospitalPrivacy:
    """Return the hospital's privacy settings: its node config, then the run config's defaults.

    Node config keys (validated by ``client.node_config.NodeConfig``): ``dp-mode``,
    ``budget-epsilon``, ``budget-delta``, ``ledger-path``. Without a ledger path the ledger
    is ``<out-dir or .>/ledgers/<hospital>.json``. Noise always comes from OS entropy here.

    Raises
    ------
    ValueError
        If the node config is invalid (naming the key).
    """
    node, run = NodeConfig.from_node_config(context.node_config), dict(context.run_config)

    def default(run_key: str) -> object:
        return run.get(run_key, DEFAULTS[run_key])

    default_ledger = Path(str(run.get("out-dir") or ".")) / "ledgers" / f"{hospital.name}.json"
    ledger = node.ledger_path or default_ledger
    return HospitalPrivacy(
        mode=node.dp_mode or str(default("dp.mode")),
        budget_epsilon=node.budget_epsilon or float(default("dp.epsilon")),  # type: ignore[arg-type]
        budget_delta=node.budget_delta or float(default("dp.delta")),  # type: ignore[arg-type]
        accountant=str(default("dp.accountant")),  # type: ignore[arg-type]
        ledger_path=ledger,
    )


def _admission(msg: Message, context: Context) -> Admission:
    """Whether and as whom this hospital takes part (raises only without a partition-id)."""
    return admit(settings=dict(msg.content[keys.CONFIG]), node_config=dict(context.node_config),
                 run_config=dict(context.run_config))


def _declined(msg: Message, admission: Admission) -> Message:
    """Reply for a hospital that refuses the round: its identity and the reason."""
    return Message(content=RecordDict({
        keys.HOSPITAL: _identity(admission.index, admission.name),
        keys.DECLINED: ConfigRecord({keys.REASON: admission.refusal}),
        keys.METRICS: MetricRecord({}),
    }), reply_to=msg)


def _statistics(msg: Message, task: TaskSpec, data: HospitalData) -> ArrayRecord:
    """Compute evaluation statistics of the message's weights on the hospital's test set."""
    outputs = get_trainer(task).predict(msg.content[keys.ARRAYS].to_numpy_ndarrays(), data.x_test)
    stats = evaluation_statistics(task.kind, data.y_test, outputs, target_scale=task.target_scale)
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in stats.items()})


def save_preprocessing(admission: Admission, privacy: HospitalPrivacy, seed: int) -> None:
    """Task csv: keep the fitted preprocessing next to the ledger, for ``fedcare predict``.

    Rewritten only when it changed (another data file, schema or run seed).
    """
    if admission.csv is None or admission.node is None:
        return
    path = preprocessing_path(privacy.ledger_path)
    provenance = {"hospital": admission.csv.data.name, "data_sha256": admission.data_sha256,
                  "data_path": str(admission.node.data_path), "seed": seed}
    document = admission.csv.preprocessing.to_dict(**provenance)
    try:
        if json.loads(path.read_text(encoding="utf-8")) == document:
            return
    except (OSError, ValueError):
        pass  # absent or unreadable: write it
    admission.csv.preprocessing.save(path, **provenance)


def _identity(index: int, name: str) -> ConfigRecord:
    return ConfigRecord({keys.HOSPITAL_NAME: name, keys.HOSPITAL_INDEX: index})


def round_request(config: ConfigRecord) -> RoundRequest:
    """Unpack the server's round settings."""
    return RoundRequest(
        run_id=str(config[keys.RUN_ID]),
        server_round=int(config[keys.SERVER_ROUND]),
        planned_rounds=int(config[keys.PLANNED_ROUNDS]),
        dp_mode=str(config[keys.DP_MODE]),
        local_epochs=int(config[keys.LOCAL_EPOCHS]),
        local_steps=int(config[keys.LOCAL_STEPS]),
        batch_size=int(config[keys.BATCH_SIZE]),
        learning_rate=float(config[keys.LEARNING_RATE]),
        clipping_norm=float(config[keys.CLIPPING_NORM]),
        update_clipping_norm=float(config[keys.UPDATE_CLIPPING_NORM]),
        seed=int(config[keys.SEED]),
        noise_mode=str(config[keys.NOISE_MODE]),
        min_contributors=int(config[keys.SECAGG_THRESHOLD]) or 1,
        clip_updates=bool(config.get(keys.CLIP_UPDATES, False)),
    )


def _reply_metrics(result: RoundResult) -> dict[str, int | float]:
    metrics: dict[str, int | float] = {keys.EPSILON_PATIENT: result.epsilon_patient,
                                       keys.EPSILON_HOSPITAL: result.epsilon_hospital}
    if result.budget_delta > 0:
        metrics[keys.BUDGET_EPSILON] = result.budget_epsilon
        metrics[keys.BUDGET_DELTA] = result.budget_delta
    if result.noise_stddev > 0:
        metrics[keys.NOISE_STDDEV] = result.noise_stddev  # for the server's norm check
    if not math.isnan(result.train_loss):
        metrics[keys.TRAIN_LOSS] = result.train_loss
    return metrics


def build_client_app(privacy_for: PrivacyProvider = privacy_from_context,
                     mods: Sequence[Mod] = ()) -> ClientApp:
    """Return the hospital ClientApp, taking privacy settings from `privacy_for`.

    `mods` wrap every handler (Flower mods), e.g. the fault drills of simulations/.
    """
    # The hospital's app pin is checked first, before any other mod or handler runs.
    client_app = ClientApp(mods=[verify_app_mod, *mods])

    def local_round(msg: Message, context: Context, admission: Admission, task: TaskSpec,
                    data: HospitalData, *, secure: bool = False,
                    ) -> tuple[HospitalPrivacy, RoundResult]:
        config = msg.content[keys.CONFIG]
        index = admission.index
        global_weights = msg.content[keys.ARRAYS].to_numpy_ndarrays()
        request = round_request(config)
        if bool(config[keys.SECAGG_ENABLED]):
            num_parameters = sum(int(w.size) for w in global_weights)
            request = replace(request, rounding_bound=rounding_bound(
                num_parameters=num_parameters, scale=float(config[keys.SECAGG_SCALE])))
        privacy = privacy_for(context, data)
        save_preprocessing(admission, privacy, seed=int(config[keys.SEED]))
        result = train_round(request, hospital=data, hospital_index=index, privacy=privacy,
                             trainer=get_trainer(task), global_weights=global_weights,
                             secure_aggregation=secure)
        return privacy, result

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        """Train (or decline) and reply with the update and the epsilon spent."""
        admission = _admission(msg, context)
        if admission.task is None or admission.data is None:
            return _declined(msg, admission)
        data = admission.data
        _, result = local_round(msg, context, admission, admission.task, data)
        metrics = _reply_metrics(result)
        content = RecordDict({keys.HOSPITAL: _identity(admission.index, admission.name)})
        if result.update is None:
            content[keys.DECLINED] = ConfigRecord({keys.REASON: result.declined})
        else:
            content[keys.ARRAYS] = ArrayRecord(result.update)
            if str(msg.content[keys.CONFIG][keys.DP_MODE]) == "none":
                metrics[keys.NUM_EXAMPLES] = data.num_train  # DP replies reveal no counts
        content[keys.METRICS] = MetricRecord(metrics)
        return Message(content=content, reply_to=msg)

    def secagg_advertise(msg: Message, context: Context) -> Message:
        """Train like ``train``, but keep the update: encode it and start the protocol round.

        With ``evaluate-received`` it first evaluates the weights it received (the previous
        round's result), which saves the secure round a separate evaluate exchange.
        """
        config = msg.content[keys.CONFIG]
        admission = _admission(msg, context)
        if admission.task is None or admission.data is None:
            return _declined(msg, admission)
        task, data, index = admission.task, admission.data, admission.index
        statistics = (_statistics(msg, task, data) if bool(config.get(keys.EVALUATE_RECEIVED))
                      else None)
        privacy, result = local_round(msg, context, admission, task, data, secure=True)
        metrics = _reply_metrics(result)
        content = RecordDict({keys.HOSPITAL: _identity(index, admission.name)})
        if result.update is None:
            content[keys.DECLINED] = ConfigRecord({keys.REASON: result.declined})
        else:
            weighted = str(config[keys.WEIGHTING]) == "examples" and str(config[keys.DP_MODE]) == "none"
            rng = privacy.noise_rng(server_round=int(config[keys.SERVER_ROUND]),
                                    hospital_index=index, stream=1)
            encoded, clipped = encode_update(
                result.update, weight=float(data.num_train) if weighted else 1.0,
                clip_bound=float(config[keys.SECAGG_CLIP_BOUND]),
                scale=float(config[keys.SECAGG_SCALE]), rng=rng)
            content[keys.SECAGG] = ConfigRecord(
                start_round(context, dict(msg.content[keys.SECAGG]), encoded, index))
            metrics[keys.NUM_CLIPPED] = clipped
        if statistics is not None:
            content[keys.STATISTICS] = statistics
        content[keys.METRICS] = MetricRecord(metrics)
        return Message(content=content, reply_to=msg)

    register_secagg_actions(client_app, secagg_advertise)

    @client_app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Evaluate the global weights on the hospital's test set; reply with statistics."""
        admission = _admission(msg, context)
        if admission.task is None or admission.data is None:
            return _declined(msg, admission)
        content = RecordDict({
            keys.STATISTICS: _statistics(msg, admission.task, admission.data),
            keys.HOSPITAL: _identity(admission.index, admission.name),
        })
        return Message(content=content, reply_to=msg)

    return client_app


app = build_client_app()
