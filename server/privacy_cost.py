"""What a run's options spend, said before the run starts (the CLI prints it, the server logs it).

Every option that spends epsilon is priced here from the run's settings alone, as a hospital
with the run's budget and a fresh ledger would calibrate it (``client.evaluation_round``,
``client.local_round``): the training updates on the training track, the planned evaluations
(the final model's, and every ``eval-every``-th round's) on the test track at patient level or
on the one hospital-level track with the updates. A deployed hospital calibrates to its own
remaining budget, so its noise can only be larger.
"""

from common.config import RunConfig
from common.dp.accounting import calibrate_noise_multiplier
from common.dp.evaluation_release import release_layout
from common.tasks import task_for_config
from common.wire.modes import DpMode, Normalisation, PrivacyLevel


def evaluation_noise_multiplier(config: RunConfig) -> float:
    """The z of each evaluation release for a hospital with the run's budget and no history.

    Patient level: the test track's budget (the run's, as ``fedcare simulate`` gives its
    hospitals) over the planned evaluations. Hospital level: the one budget over the planned
    rounds plus evaluations, each a release at the same z.
    """
    releases = config.planned_evaluations
    if config.dp_mode == DpMode.HOSPITAL:
        releases += config.num_server_rounds
    return calibrate_noise_multiplier(target_epsilon=config.dp_epsilon,
                                      target_delta=config.dp_delta, sample_rate=1.0,
                                      steps=releases, accountant=config.dp_accountant)


def privacy_cost_lines(config: RunConfig) -> list[str]:
    """One line per option that spends epsilon (or says it spends none), in words."""
    lines = [_normalisation_line(config)]
    if not config.private:
        return ["privacy cost: none is charged (--dp none): neither the updates nor the "
                "evaluations are private", *lines]
    evaluations = config.planned_evaluations
    which = ("the final model's" if config.eval_every == 0 else
             f"every {config.eval_every}-th round's model and the final one's")
    z = evaluation_noise_multiplier(config)
    layout = release_layout(task_for_config(config))
    stddev = z * layout.sensitivity(PrivacyLevel(config.dp_mode.value))
    unit = "counts" if config.dp_mode == DpMode.PATIENT else "fractions of the test rows"
    track = ("its test track (budget epsilon "
             f"{config.dp_epsilon:g}, delta {config.dp_delta:g}: the simulated hospitals' "
             "default, a deployed hospital's own)" if config.dp_mode == DpMode.PATIENT else
             "the hospital-level track, with the updates (the whole data set is the unit)")
    lines.insert(0, f"privacy cost, training: each hospital's updates, {config.dp_mode.value} "
                    f"level, on its training track within its own budget (the simulated "
                    f"hospitals': epsilon {config.dp_epsilon:g} at delta {config.dp_delta:g}; "
                    "a deployed hospital's: its ledger's, which it enforces itself)")
    lines.insert(1, f"privacy cost, evaluation: {evaluations} release(s) per hospital "
                    f"({which}), charged on {track}; each at noise multiplier {z:.3g}, noise "
                    f"stddev {stddev:.3g} {unit} per cell"
                    + ("" if config.eval_every == 0 else
                       f" (eval-every {config.eval_every}: {evaluations} evaluations share "
                       "the budget one would have; each is noisier)"))
    from server.explanation import explanation_cost_line

    lines.insert(2, explanation_cost_line(config))
    return lines


def _normalisation_line(config: RunConfig) -> str:
    if config.normalisation == Normalisation.PER_HOSPITAL:
        return ("normalisation per-hospital: no epsilon, but each hospital's own statistics "
                "shape every release and are NOT covered by the privacy guarantee")
    return ("normalisation public: the task's (or schema's) public constants, the same at "
            "every hospital: no epsilon")
