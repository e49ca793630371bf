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
from dataclasses import dataclass

from common.quiet import quiet_third_party

quiet_third_party()  # before TensorFlow: Ray workers and flwr run's app processes import this

from flwr.app import Context, Message  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from flwr.clientapp import ClientApp  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from flwr.clientapp.typing import Mod  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads

from client.admission import Admitted, Refused, admit  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from client.app_pinning import verify_app_mod  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from client.disclosure_log_mod import disclosure_log_mod  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from client.evaluation_round import EvaluationRequest, EvaluationResult, evaluate_model  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from client.explanation_round import ExplanationRequest, explain_model  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from client.identity_proof import identity_proof_mod, remember_signing_key  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from client.local_round import RoundResult, train_round  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from client.privacy import HospitalPrivacy, ledger_report, privacy_from_node_config  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from client.replies import declined_reply, evaluate_reply, train_reply  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from client.secure_aggregation import check_secure_round, register_secagg_actions, start_round  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from client.training import LocalTrainer, get_trainer  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from common.errors import LedgerError, SecAggProtocolError  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from common.secagg.round_settings import encode_round_update, encoding_scale, signed_settings  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from common.secagg.update_vector import rounding_bound  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from common.tasks import HospitalData, TaskSpec  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from common.tasks.csv_preprocessing import preprocessing_path  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from common.weights import arrays_problem  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from common.wire.actions import EXPLAIN  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from common.wire.fields import WireFormatError  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from common.wire.records import Request, node_identity, pack_reply, request_ref, unpack_request  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from common.wire.replies import DeclinedReply, ExplainReply, HospitalIdentity, Reply, RoundRef  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads
from common.wire.settings import RoundSettings  # noqa: E402 - after quiet_third_party(), which runs before TensorFlow loads

logger = logging.getLogger(__name__)

PrivacyProvider = Callable[[Context, HospitalData], HospitalPrivacy]
TrainingDataHook = Callable[[HospitalData, int], HospitalData]
TrainerFactory = Callable[[TaskSpec], LocalTrainer]


def privacy_from_context(context: Context, hospital: HospitalData) -> HospitalPrivacy:
    """Return the hospital's privacy settings from its node config (else built-in defaults)."""
    return privacy_from_node_config(dict(context.node_config), hospital.name)


@dataclass(frozen=True, slots=True)
class Unpacked:
    """A server message this hospital is admitted to answer: unpacked, settings present."""

    request: Request
    settings: RoundSettings
    admitted: Admitted

    @property
    def identity(self) -> HospitalIdentity:
        """The hospital as its replies name it."""
        return HospitalIdentity(self.admitted.name, self.admitted.index)


def _unpack(msg: Message, context: Context) -> Unpacked | Message:
    """Unpack the request and admit the hospital; a Message is the decline to send instead."""
    try:
        request = unpack_request(msg.content)
        if request.settings is None:
            raise WireFormatError("config", "missing")
    except WireFormatError as error:
        return _refused(msg, context, f"the server's message is malformed: {error}")
    settings = request.settings
    try:
        admission = admit(settings=settings, node_config=dict(context.node_config),
                          run_config=dict(context.run_config))
    except ValueError as error:  # e.g. the round's hospital count is not this federation's
        return _refused(msg, context, "this hospital cannot take part in a round with these "
                        f"settings: {error}")
    if isinstance(admission, Refused):
        identity = HospitalIdentity(admission.name, admission.index)
        return _reply(msg, declined_reply(settings, identity, admission.reason))
    unpacked = Unpacked(request, settings, admission)
    if request.weights is not None:
        # Whatever the server sends: nothing is evaluated or trained on arrays that are not
        # this task's model (a deviating server's NaN or wrong-shaped weights are declined).
        problem = arrays_problem(request.weights, get_trainer(admission.task).model.weights)
        if problem is not None:
            return _reply(msg, declined_reply(
                settings, unpacked.identity,
                f"the server's weights do not fit the {admission.task.name} model: {problem}"))
    return unpacked


def _refused(msg: Message, context: Context, reason: str) -> Message:
    """Decline before admission: the node's own identity, the request's id if readable."""
    reply = DeclinedReply(node_identity(dict(context.node_config)), request_ref(msg.content),
                          reason)
    return Message(content=pack_reply(reply), reply_to=msg)


def _reply(msg: Message, reply: Reply) -> Message:
    return Message(content=pack_reply(reply), reply_to=msg)


def _refusal(reason: str) -> RoundResult:
    """A local round that declined before releasing anything, with the reason."""
    return RoundResult(None, float("nan"), reason, 0.0, 0.0)


def save_preprocessing(admitted: Admitted, privacy: HospitalPrivacy, seed: int) -> None:
    """Task csv: keep the fitted preprocessing next to the ledger, for ``fedcare predict``.

    Rewritten only when it changed (another data file, schema or run seed).
    """
    if admitted.csv is None:
        return
    path = preprocessing_path(privacy.ledger_path)
    provenance = {"hospital": admitted.csv.data.name, "data_sha256": admitted.data_sha256,
                  "data_path": str(admitted.node.data_path), "seed": seed}
    document = admitted.csv.preprocessing.to_dict(**provenance)
    try:
        if json.loads(path.read_text(encoding="utf-8")) == document:
            return
    except (OSError, ValueError):
        pass  # absent or unreadable: write it
    admitted.csv.preprocessing.save(path, **provenance)


@dataclass(frozen=True, slots=True)
class HospitalHandlers:
    """The ClientApp's handlers (train, secure-aggregation advertise, evaluate) and the hooks
    they call. A module-level class, so that the app pickles its handlers by reference.

    Attributes
    ----------
    privacy_for : PrivacyProvider
        The hospital's privacy settings for a message's context and its (training) data.
    training_data : TrainingDataHook | None
        Simulation hook (``fedcare audit``): `training_data(data, index)` returns the training
        data the local round uses, given the hospital's admitted (already preprocessed) data.
    trainer_for : TrainerFactory
        The local trainer for a task (tests swap in a broken one).
    """

    privacy_for: PrivacyProvider
    training_data: TrainingDataHook | None
    trainer_for: TrainerFactory

    def train(self, msg: Message, context: Context) -> Message:
        """Train (or decline) and reply with the update and the epsilon spent."""
        unpacked = _unpack(msg, context)
        if isinstance(unpacked, Message):
            return unpacked
        settings, weights = unpacked.settings, unpacked.request.weights
        if settings.secagg_enabled or weights is None:
            return _reply(msg, declined_reply(settings, unpacked.identity,
                                              "a plain train message needs the global weights "
                                              "and a run without secure aggregation"))
        # The weights received are the previous round's model: evaluated first (recorded at
        # home; released only with evaluate-received, riding on this reply, also a decline).
        statistics = self._evaluation(unpacked, context, settings.server_round - 1,
                                      release=settings.evaluate_received).statistics
        privacy, result = self._local_round(unpacked, context)
        return _reply(msg, train_reply(settings, unpacked.identity, result,
                                       num_examples=unpacked.admitted.data.num_train,
                                       statistics=statistics,
                                       privacy=ledger_report(privacy, unpacked.admitted.name)))

    def secagg_advertise(self, msg: Message, context: Context) -> Message:
        """Train like ``train``, but keep the update: encode it and start the protocol round.

        With ``evaluate-received`` it first evaluates the weights it received (the previous
        round's result), which saves the secure round a separate evaluate exchange.
        """
        unpacked = _unpack(msg, context)
        if isinstance(unpacked, Message):
            return unpacked
        settings, identity = unpacked.settings, unpacked.identity
        weights, stage = unpacked.request.weights, unpacked.request.secagg
        if not settings.secagg_enabled or weights is None or stage is None:
            return _reply(msg, declined_reply(settings, identity,
                                              "a secure-aggregation message needs the global "
                                              "weights, the stage request and secagg-enabled"))
        statistics = self._evaluation(unpacked, context, settings.server_round - 1,
                                      release=settings.evaluate_received).statistics
        privacy, result = self._local_round(unpacked, context)
        num_train = unpacked.admitted.data.num_train
        report = ledger_report(privacy, unpacked.admitted.name)
        if result.update is None:
            return _reply(msg, train_reply(settings, identity, result, num_examples=num_train,
                                           statistics=statistics, privacy=report))
        d = sum(int(w.size) for w in weights)
        rng = privacy.noise_rng(server_round=settings.server_round,
                                hospital_index=unpacked.admitted.index, stream=1)
        # No weight coordinate: every update counts once, clipped to the run's update bound
        # and cut to the range the round's own settings give (each cut counted).
        encoded = encode_round_update(result.update, settings, rng=rng)
        try:
            payload = start_round(context, privacy, stage, encoded.values, identity,
                                  RoundRef(settings.run_id, settings.server_round),
                                  signed_settings(settings, d))
        except SecAggProtocolError as error:
            # Refused before anything masked left: the server learns why (it may be its doing).
            return _reply(msg, declined_reply(settings, identity,
                                              f"secure aggregation refused: {error}",
                                              statistics=statistics))
        return _reply(msg, train_reply(settings, identity, result, num_examples=num_train,
                                       statistics=statistics, secagg=payload,
                                       encoding_clipped=encoded.num_clipped, privacy=report))

    def evaluate(self, msg: Message, context: Context) -> Message:
        """Evaluate the global weights on the test rows; reply with the (DP) release or decline.

        Under DP the answer is a noised release charged on the test track, or a decline (not a
        planned evaluation, a spent test budget, another split): never exact statistics.
        """
        unpacked = _unpack(msg, context)
        if isinstance(unpacked, Message):
            return unpacked
        settings, identity = unpacked.settings, unpacked.identity
        if unpacked.request.weights is None:
            return _reply(msg, declined_reply(settings, identity,
                                              "an evaluate message needs the weights"))
        result = self._evaluation(unpacked, context, settings.server_round)
        report = ledger_report(self.privacy_for(context, unpacked.admitted.data),
                               unpacked.admitted.name)
        if result.statistics is None:
            return _reply(msg, declined_reply(settings, identity, result.declined,
                                              privacy=report))
        return _reply(msg, evaluate_reply(settings, identity, result.statistics, report))

    def explain(self, msg: Message, context: Context) -> Message:
        """The consortium explanation of the final weights on the training rows: its DP
        release (``client.explanation_round``) or a decline naming why.
        """
        unpacked = _unpack(msg, context)
        if isinstance(unpacked, Message):
            return unpacked
        settings, identity, admitted = unpacked.settings, unpacked.identity, unpacked.admitted
        if unpacked.request.weights is None:
            return _reply(msg, declined_reply(settings, identity,
                                              "arrays: an explain message needs the weights"))
        privacy = self.privacy_for(context, admitted.data)
        request = ExplanationRequest(settings, unpacked.request.weights, admitted.task,
                                     admitted.data, admitted.index, privacy)
        try:
            result = explain_model(request)
        except LedgerError as error:
            result = None
            reason = f"its privacy ledger is unusable: {error}"
        report = ledger_report(privacy, admitted.name)
        if result is None or result.vector is None:
            reason = reason if result is None else result.declined
            return _reply(msg, declined_reply(settings, identity, reason, privacy=report))
        return _reply(msg, ExplainReply(identity, RoundRef(settings.run_id,
                                                           settings.server_round),
                                        result.vector, report))

    def _evaluation(self, unpacked: Unpacked, context: Context, evaluated_round: int, *,
                    release: bool = True) -> EvaluationResult:
        """Evaluate the weights received (round `evaluated_round`'s model) on the test rows:
        exact metrics recorded at home, the DP release (or exact, without DP) if `release`.
        """
        admitted = unpacked.admitted
        privacy = self.privacy_for(context, admitted.data)
        request = EvaluationRequest(unpacked.settings, unpacked.request.weights or [],
                                    evaluated_round, admitted.task, admitted.data,
                                    admitted.index, privacy, get_trainer(admitted.task))
        try:
            return evaluate_model(request, release=release)
        except LedgerError as error:
            return EvaluationResult(None, f"its privacy ledger is unusable: {error}")

    def _local_round(self, unpacked: Unpacked,
                     context: Context) -> tuple[HospitalPrivacy, RoundResult]:
        """Run the local round (a refusal on the way is a declined result, never an error)."""
        admitted, settings = unpacked.admitted, unpacked.settings
        data = admitted.data
        if self.training_data is not None:
            data = self.training_data(data, admitted.index)
        privacy = self.privacy_for(context, data)
        remember_signing_key(context, admitted.name, privacy.signing_key_path)
        save_preprocessing(admitted, privacy, seed=settings.seed)
        try:
            result = self._train_round(unpacked, context, privacy, data)
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

    def _train_round(self, unpacked: Unpacked, context: Context, privacy: HospitalPrivacy,
                     data: HospitalData) -> RoundResult:
        """Check a secure round against the pinned roster, then train, privatize and charge.

        Raises
        ------
        SecAggProtocolError, LedgerError, ValueError
            As ``check_secure_round`` and ``train_round`` raise them (the caller declines).
        """
        settings, weights = unpacked.settings, unpacked.request.weights or []
        d = sum(int(w.size) for w in weights)
        roster, bound = None, 0.0
        if settings.secagg_enabled:
            # Check, then draw: no noise is drawn and nothing charged before the round's
            # settings pass the pinned roster's rules and its first stage is checked.
            roster = check_secure_round(context, privacy, unpacked.request.secagg or {},
                                        settings, unpacked.identity, d)
            bound = rounding_bound(num_parameters=d, scale=encoding_scale(settings, d))
        return train_round(settings, hospital=data, hospital_index=unpacked.admitted.index,
                           privacy=privacy, trainer=self.trainer_for(unpacked.admitted.task),
                           global_weights=weights, secure_aggregation=settings.secagg_enabled,
                           rounding_bound=bound, roster=roster)


def build_client_app(privacy_for: PrivacyProvider = privacy_from_context,
                     mods: Sequence[Mod] = (), *,
                     training_data: TrainingDataHook | None = None,
                     trainer_for: TrainerFactory = get_trainer) -> ClientApp:
    """Return the hospital ClientApp, taking privacy settings from `privacy_for`.

    `mods` wrap every handler (Flower mods), e.g. the fault drills of simulations/.
    Simulation hooks (``fedcare audit``): `training_data(data, index)` returns the training
    data the local round uses, given the hospital's admitted (already preprocessed) data, e.g.
    with canary records added after its preprocessing was fitted; evaluation keeps the
    hospital's own test rows. `trainer_for` builds the local trainer (tests swap in a broken one).
    """
    handlers = HospitalHandlers(privacy_for, training_data, trainer_for)
    # Every request and the reply that leaves are recorded in the hospital's disclosure log
    # (outermost: it sees the final reply); the hospital's app pin is checked next, before
    # any other mod or handler runs; every reply's identity is signed last, around the
    # handler (client.identity_proof).
    client_app = ClientApp(mods=[disclosure_log_mod(privacy_for), verify_app_mod, *mods,
                                 identity_proof_mod])
    client_app.train()(handlers.train)
    register_secagg_actions(client_app, handlers.secagg_advertise)
    client_app.evaluate()(handlers.evaluate)
    client_app.query(EXPLAIN)(handlers.explain)
    return client_app


app = build_client_app()
