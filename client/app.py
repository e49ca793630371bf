"""The hospital's ClientApp (Flower Message API): thin handlers around the local round.

Handlers unpack the round's settings and global weights, call ``client.local_round`` (budget,
training, privacy, ledger) and pack the reply: the update, or the reason the hospital declined,
plus its epsilon spent. Privacy settings come from the hospital's own configuration through a
provider, never from the message.
"""

import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.hospital import hospital_index, load_hospital
from client.local_round import RoundRequest, RoundResult, train_round
from client.secure_aggregation import register_secagg_actions, start_round
from client.privacy import HospitalPrivacy
from client.training import get_trainer
from common import record_keys as keys
from common.config import DEFAULTS
from common.metrics import evaluation_statistics
from common.secagg.update_vector import encode_update, rounding_bound
from common.tasks import HospitalData, get_task

PrivacyProvider = Callable[[Context, HospitalData], HospitalPrivacy]


def privacy_from_context(context: Context, hospital: HospitalData) -> HospitalPrivacy:
    """The hospital's privacy settings: its node config first, then the run config's defaults.

    Node config keys: ``dp-mode``, ``budget-epsilon``, ``budget-delta``, ``ledger-path``.
    Without a ledger path the ledger is ``<out-dir or .>/ledgers/<hospital>.json``. Noise
    always comes from OS entropy here.
    """
    node, run = dict(context.node_config), dict(context.run_config)

    def setting(node_key: str, run_key: str) -> object:
        return node.get(node_key, run.get(run_key, DEFAULTS[run_key]))

    ledger = node.get("ledger-path") or Path(str(run.get("out-dir") or ".")) / "ledgers" / f"{hospital.name}.json"
    return HospitalPrivacy(
        mode=str(setting("dp-mode", "dp.mode")),
        budget_epsilon=float(setting("budget-epsilon", "dp.epsilon")),  # type: ignore[arg-type]
        budget_delta=float(setting("budget-delta", "dp.delta")),  # type: ignore[arg-type]
        accountant=str(run.get("dp.accountant", DEFAULTS["dp.accountant"])),  # type: ignore[arg-type]
        ledger_path=Path(str(ledger)),
    )


def _hospital(msg: Message, context: Context) -> tuple[int, HospitalData]:
    config = msg.content[keys.CONFIG]
    hospitals = int(config[keys.HOSPITALS])
    index = hospital_index(dict(context.node_config), hospitals=hospitals)
    data = load_hospital(
        str(config[keys.TASK]), hospitals, index, seed=int(config[keys.SEED]),
        partition=str(config[keys.PARTITION]), alpha=float(config[keys.DIRICHLET_ALPHA]),
    )
    return index, data


def _statistics(msg: Message, context: Context) -> ArrayRecord:
    """Evaluation statistics of the message's weights on the hospital's test set."""
    _, data = _hospital(msg, context)
    task = get_task(str(msg.content[keys.CONFIG][keys.TASK]))
    outputs = get_trainer(task).predict(msg.content[keys.ARRAYS].to_numpy_ndarrays(), data.x_test)
    stats = evaluation_statistics(task.kind, data.y_test, outputs, target_scale=task.target_scale)
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in stats.items()})


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
    )


def _reply_metrics(result: RoundResult) -> dict[str, int | float]:
    metrics: dict[str, int | float] = {keys.EPSILON_PATIENT: result.epsilon_patient,
                                       keys.EPSILON_HOSPITAL: result.epsilon_hospital}
    if result.budget_delta > 0:
        metrics[keys.BUDGET_EPSILON] = result.budget_epsilon
        metrics[keys.BUDGET_DELTA] = result.budget_delta
    if not math.isnan(result.train_loss):
        metrics[keys.TRAIN_LOSS] = result.train_loss
    return metrics


def build_client_app(privacy_for: PrivacyProvider = privacy_from_context) -> ClientApp:
    """Return the hospital ClientApp, taking privacy settings from `privacy_for`."""
    client_app = ClientApp()

    def local_round(msg: Message, context: Context, *, secure: bool = False,
                    ) -> tuple[int, HospitalData, HospitalPrivacy, RoundResult]:
        config = msg.content[keys.CONFIG]
        index, data = _hospital(msg, context)
        task = get_task(str(config[keys.TASK]))
        global_weights = msg.content[keys.ARRAYS].to_numpy_ndarrays()
        request = round_request(config)
        if bool(config[keys.SECAGG_ENABLED]):
            num_parameters = sum(int(w.size) for w in global_weights)
            request = replace(request, rounding_bound=rounding_bound(
                num_parameters=num_parameters, scale=float(config[keys.SECAGG_SCALE])))
        privacy = privacy_for(context, data)
        result = train_round(request, hospital=data, hospital_index=index, privacy=privacy,
                             trainer=get_trainer(task), global_weights=global_weights,
                             secure_aggregation=secure)
        return index, data, privacy, result

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        """Train (or decline) and reply with the update and the epsilon spent."""
        index, data, _, result = local_round(msg, context)
        metrics = _reply_metrics(result)
        content = RecordDict({keys.HOSPITAL: _identity(index, data.name)})
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
        statistics = _statistics(msg, context) if bool(config.get(keys.EVALUATE_RECEIVED)) else None
        index, data, privacy, result = local_round(msg, context, secure=True)
        metrics = _reply_metrics(result)
        content = RecordDict({keys.HOSPITAL: _identity(index, data.name)})
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
        index, data = _hospital(msg, context)
        content = RecordDict({
            keys.STATISTICS: _statistics(msg, context),
            keys.HOSPITAL: _identity(index, data.name),
        })
        return Message(content=content, reply_to=msg)

    return client_app


app = build_client_app()
