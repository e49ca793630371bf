"""The hospital's ClientApp (Flower Message API): thin handlers around the local round.

Each handler unpacks the server's message (``common.wire.records``: a malformed one is
declined with the field named), checks that the hospital takes part (``client.admission``: the
server's fedcare version, its node config, for task csv its schema's hash and data file), calls
the local round (budget, training, privacy, ledger: ``client.local_round``) and packs the reply
that ``client.replies`` built against the mode's manifest. Privacy settings come from the
hospital's own configuration through a provider (``client.privacy``), never from the message
or the run config.
"""

import json
import logging
from collections.abc import Callable, Sequence

from common.quiet import quiet_third_party

quiet_third_party()  # before TensorFlow: Ray workers and flwr run's app processes import this

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from client.admission import Admission, admit
from client.app_pinning import verify_app_mod
from client.identity_proof import identity_proof_mod, remember_signing_key
from client.local_round import RoundResult, train_round
from client.privacy import HospitalPrivacy, privacy_from_node_config
from client.replies import declined_reply, evaluate_reply, train_reply
from client.secure_aggregation import check_secure_round, register_secagg_actions, start_round
from client.training import LocalTrainer, get_trainer
from common.errors import LedgerError
from common.metrics import Statistics, evaluation_statistics
from common.errors import SecAggProtocolError
from common.secagg.round_settings import encode_round_update, encoding_scale, signed_settings
from common.secagg.update_vector import rounding_bound
from common.tasks import HospitalData, TaskSpec
from common.tasks.csv_preprocessing import preprocessing_path
from common.types import NDArrays
from common.weights import arrays_problem
from common.wire.fields import WireFormatError
from common.wire.records import Request, node_identity, pack_reply, request_ref, unpack_request
from common.wire.replies import DeclinedReply, HospitalIdentity, RoundRef
from common.wire.settings import RoundSettings

logger = logging.getLogger(__name__)

PrivacyProvider = Callable[[Context, HospitalData], HospitalPrivacy]
TrainingDataHook = Callable[[HospitalData, int], HospitalData]


def privacy_from_context(context: Context, hospital: HospitalData) -> HospitalPrivacy:
    """Return the hospital's privacy settings from its node config (else built-in defaults)."""
    return privacy_from_node_config(dict(context.node_config), hospital.name)


class Refused(Exception):
    """The message cannot be answered with work: the reply is this decline."""

    def __init__(self, reply: Message) -> None:
        super().__init__("refused")
        self.reply = reply


def _unpack(msg: Message, context: Context) -> tuple[Request, RoundSettings, Admission]:
    """Unpack the request and admit the hospital, or raise Refused with the decline."""
    try:
        request = unpack_request(msg.content)
        if request.settings is None:
            raise WireFormatError("config", "missing")
    except WireFormatError as error:
        raise Refused(_refused(msg, context, f"the server's message is malformed: {error}")) \
            from None
    settings = request.settings
    try:
        admission = admit(settings=settings, node_config=dict(context.node_config),
                          run_config=dict(context.run_config))
    except ValueError as error:  # e.g. the round's hospital count is not this federation's
        raise Refused(_refused(msg, context, "this hospital cannot take part in a round with "
                               f"these settings: {error}")) from None
    identity = HospitalIdentity(admission.name, admission.index)
    if admission.task is None or admission.data is None:
        raise Refused(_reply(msg, declined_reply(settings, identity, admission.refusal)))
    if request.weights is not None:
        # Whatever the server sends: nothing is evaluated or trained on arrays that are not
        # this task's model (a deviating server's NaN or wrong-shaped weights are declined).
        problem = arrays_problem(request.weights, get_trainer(admission.task).model.weights)
        if problem is not None:
            raise Refused(_reply(msg, declined_reply(
                settings, identity,
                f"the server's weights do not fit the {admission.task.name} model: {problem}")))
    return request, settings, admission


def _refused(msg: Message, context: Context, reason: str) -> Message:
    """Decline before admission: the node's own identity, the request's id if readable."""
    reply = DeclinedReply(node_identity(dict(context.node_config)), request_ref(msg.content),
                          reason)
    return Message(content=pack_reply(reply), reply_to=msg)


def _reply(msg: Message, reply: object) -> Message:
    return Message(content=pack_reply(reply), reply_to=msg)  # type: ignore[arg-type]


def _identity(admission: Admission) -> HospitalIdentity:
    return HospitalIdentity(admission.name, admission.index)


def _refusal(reason: str) -> RoundResult:
    """A local round that declined before releasing anything, with the reason."""
    return RoundResult(None, float("nan"), reason, 0.0, 0.0)


def _statistics(weights: NDArrays, task: TaskSpec, data: HospitalData) -> Statistics:
    """Evaluation statistics of `weights` on the hospital's test set."""
    outputs = get_trainer(task).predict(weights, data.x_test)
    return evaluation_statistics(task.kind, data.y_test, outputs, target_scale=task.target_scale)


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


def build_client_app(privacy_for: PrivacyProvider = privacy_from_context,
                     mods: Sequence[Mod] = (), *,
                     training_data: TrainingDataHook | None = None,
                     trainer_for: Callable[[TaskSpec], LocalTrainer] = get_trainer) -> ClientApp:
    """Return the hospital ClientApp, taking privacy settings from `privacy_for`.

    `mods` wrap every handler (Flower mods), e.g. the fault drills of simulations/.
    Simulation hooks (``fedcare audit``): `training_data(data, index)` returns the training
    data the local round uses, given the hospital's admitted (already preprocessed) data, e.g.
    with canary records added after its preprocessing was fitted; evaluation keeps the
    hospital's own test rows. `trainer_for` builds the local trainer (tests swap in a broken one).
    """
    # The hospital's app pin is checked first, before any other mod or handler runs; every
    # reply's identity is signed last, around the handler (client.identity_proof).
    client_app = ClientApp(mods=[verify_app_mod, *mods, identity_proof_mod])

    def local_round(request: Request, settings: RoundSettings, context: Context,
                    admission: Admission) -> tuple[HospitalPrivacy, RoundResult]:
        task, data = admission.task, admission.data
        if training_data is not None and data is not None:
            data = training_data(data, admission.index)
        weights = request.weights or []
        d = sum(int(w.size) for w in weights)
        privacy = privacy_for(context, data)  # type: ignore[arg-type]
        remember_signing_key(context, admission.name, privacy.signing_key_path)
        save_preprocessing(admission, privacy, seed=settings.seed)
        try:
            roster, bound = None, 0.0
            if settings.secagg_enabled:
                # Check, then draw: no noise is drawn and nothing charged before the round's
                # settings pass the pinned roster's rules and its first stage is checked.
                roster = check_secure_round(context, privacy, request.secagg or {}, settings,
                                            _identity(admission), d)
                bound = rounding_bound(num_parameters=d, scale=encoding_scale(settings, d))
            result = train_round(settings, hospital=data, hospital_index=admission.index,  # type: ignore[arg-type]
                                 privacy=privacy, trainer=trainer_for(task),  # type: ignore[arg-type]
                                 global_weights=weights, secure_aggregation=settings.secagg_enabled,
                                 rounding_bound=bound, roster=roster)
        except SecAggProtocolError as error:
            result = _refusal("secure aggregation refused before any noise was drawn or epsilon "
                              f"charged: {error}")
        except LedgerError as error:
            # Fail closed: no update; the server learns why (the hospital's admin must act).
            result = _refusal(f"its privacy ledger is unusable: {error}")
        except (ValueError, OverflowError, ZeroDivisionError) as error:
            # A settings value no check above names: still a decline, never an error reply.
            logger.warning("declining a round whose settings cannot be applied", exc_info=True)
            result = _refusal(f"the round's settings cannot be applied: {error}")
        return privacy, result

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        """Train (or decline) and reply with the update and the epsilon spent."""
        try:
            request, settings, admission = _unpack(msg, context)
        except Refused as refused:
            return refused.reply
        if settings.secagg_enabled or request.weights is None:
            return _reply(msg, declined_reply(settings, _identity(admission),
                                              "a plain train message needs the global weights "
                                              "and a run without secure aggregation"))
        # The weights received are the previous round's model: evaluate them before training
        # (their statistics ride on this reply, also on a decline).
        statistics = (_statistics(request.weights, admission.task, admission.data)  # type: ignore[arg-type]
                      if settings.evaluate_received else None)
        _, result = local_round(request, settings, context, admission)
        return _reply(msg, train_reply(settings, _identity(admission), result,
                                       num_examples=admission.data.num_train,  # type: ignore[union-attr]
                                       statistics=statistics))

    def secagg_advertise(msg: Message, context: Context) -> Message:
        """Train like ``train``, but keep the update: encode it and start the protocol round.

        With ``evaluate-received`` it first evaluates the weights it received (the previous
        round's result), which saves the secure round a separate evaluate exchange.
        """
        try:
            request, settings, admission = _unpack(msg, context)
        except Refused as refused:
            return refused.reply
        task, data = admission.task, admission.data
        if not settings.secagg_enabled or request.weights is None or request.secagg is None:
            return _reply(msg, declined_reply(settings, _identity(admission),
                                              "a secure-aggregation message needs the global "
                                              "weights, the stage request and secagg-enabled"))
        statistics = (_statistics(request.weights, task, data)  # type: ignore[arg-type]
                      if settings.evaluate_received else None)
        privacy, result = local_round(request, settings, context, admission)
        if result.update is None:
            return _reply(msg, train_reply(settings, _identity(admission), result,
                                           num_examples=data.num_train,  # type: ignore[union-attr]
                                           statistics=statistics))
        d = sum(int(w.size) for w in request.weights)
        rng = privacy.noise_rng(server_round=settings.server_round,
                                hospital_index=admission.index, stream=1)
        # No weight coordinate: every update counts once, clipped to the run's update bound
        # and cut to the range the round's own settings give (each cut counted).
        encoded = encode_round_update(result.update, settings, rng=rng)
        try:
            payload = start_round(context, privacy, request.secagg, encoded.values,
                                  _identity(admission),
                                  RoundRef(settings.run_id, settings.server_round),
                                  signed_settings(settings, d))
        except SecAggProtocolError as error:
            # Refused before anything masked left: the server learns why (it may be its doing).
            return _reply(msg, declined_reply(settings, _identity(admission),
                                              f"secure aggregation refused: {error}",
                                              statistics=statistics))
        return _reply(msg, train_reply(settings, _identity(admission), result,
                                       num_examples=data.num_train,  # type: ignore[union-attr]
                                       statistics=statistics, secagg=payload,
                                       encoding_clipped=encoded.num_clipped))

    register_secagg_actions(client_app, secagg_advertise)

    @client_app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Evaluate the global weights on the hospital's test set; reply with statistics."""
        try:
            request, settings, admission = _unpack(msg, context)
        except Refused as refused:
            return refused.reply
        if request.weights is None:
            return _reply(msg, declined_reply(settings, _identity(admission),
                                              "an evaluate message needs the weights"))
        statistics = _statistics(request.weights, admission.task, admission.data)  # type: ignore[arg-type]
        return _reply(msg, evaluate_reply(settings, _identity(admission), statistics))

    return client_app


app = build_client_app()
