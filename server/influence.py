"""How far one hospital can move the global model, per round and over a run, plain and secure.

All bounds are L2 norms in the model's parameter space, from the run's settings alone (what the
server checks, never what a hospital states). They hold for FedAvg with server learning rate
eta, uniform weighting and the mean aggregator (the defaults): a round's step is eta times the
mean of the n inputs it averages.

- Plain rounds: the server refuses a visible update whose norm exceeds U
  (``server.federation.update_norm_bound``; none under ``dp none`` without ``clip-updates``:
  then nothing bounds one hospital). One hospital's input a moves the step by eta a / n, so
  against an honest input x of its own it moves the step by at most eta 2U / n.
- Secure rounds: nothing proves a masked input's norm. The server checks the decoded sum S of
  n inputs against n K, K = C + noise bound + rounding (``common.secagg.round_settings``:
  ``input_norm_bound``, ``sum_norm_bound``). A hospital that knows the others' sum H can make
  its effective input S - H anything with ||S|| <= n K, and ||H + x|| <= n K, so it moves the
  step by at most eta 2K: n times the plain bound when K = U. (Checked per coordinate only,
  as before the norm check, the bound was eta 2 range sqrt(d).)
- The step itself, whoever sends what: at most eta U (plain) or eta K (secure) a round.
- Over R rounds: R times each (the per-round bounds add up; an aborted secure round moves
  nothing).

``python -m server.influence`` prints the numbers for the default heart-disease run and
variants (docs/reliability-influence.md quotes them).
"""

import math
from dataclasses import dataclass, replace

from common.config import RunConfig
from common.secagg.round_settings import encoding_range, input_norm_bound
from common.wire.modes import DpMode, NoiseMode, ServerOptimizerName
from server.federation import round_settings, update_norm_bound


@dataclass(frozen=True, slots=True)
class InfluenceBounds:
    """One hospital's largest effect on the global model (L2, model units), plain and secure.

    Attributes
    ----------
    hospitals, rounds, num_parameters : int
        n, R and d of the run.
    learning_rate : float
        eta, FedAvg's server learning rate.
    update_bound : float | None
        U, the plain path's norm bound on a visible update (None: unbounded).
    input_bound : float
        K = C + noise bound + rounding, the norm no honest encoded input exceeds.
    coordinate_range : float
        The secure encoding's per-coordinate range (the only check before the norm check).
    """

    hospitals: int
    rounds: int
    num_parameters: int
    learning_rate: float
    update_bound: float | None
    input_bound: float
    coordinate_range: float

    @property
    def plain_round(self) -> float:
        """Plain: eta 2U / n, one hospital's effect on a round's step (inf: unbounded)."""
        if self.update_bound is None:
            return math.inf
        return self.learning_rate * 2 * self.update_bound / self.hospitals

    @property
    def secure_round(self) -> float:
        """Secure: eta 2K, one hospital's effect on a round's step (the sum norm-checked)."""
        return self.learning_rate * 2 * self.input_bound

    @property
    def secure_round_coordinates_only(self) -> float:
        """Secure, coordinates checked only (before the norm check): eta 2 range sqrt(d)."""
        return self.learning_rate * 2 * self.coordinate_range * math.sqrt(self.num_parameters)

    @property
    def plain_step(self) -> float:
        """Plain: eta U, the most a round's step can be, whoever sends what (inf: unbounded)."""
        return math.inf if self.update_bound is None else self.learning_rate * self.update_bound

    @property
    def secure_step(self) -> float:
        """Secure: eta K, the most a round's step can be, whoever sends what."""
        return self.learning_rate * self.input_bound

    def over_run(self, per_round: float) -> float:
        """R times a per-round bound: the most over the whole run."""
        return self.rounds * per_round


def influence_bounds(config: RunConfig, num_parameters: int) -> InfluenceBounds:
    """The bounds for `config`'s run with a model of `num_parameters` parameters.

    Raises
    ------
    ValueError
        For a server optimizer other than FedAvg (FedAdam and FedYogi rescale each coordinate
        by its running second moment, so a bound on the mean is not one on the step).
    """
    if config.server_optimizer != ServerOptimizerName.FEDAVG:
        raise ValueError(f"influence bounds hold for server-optimizer fedavg, got "
                         f"{config.server_optimizer.value!r}")
    plain = replace(config, secagg_enabled=False)
    settings = round_settings(replace(config, secagg_enabled=True), "influence", 1)
    return InfluenceBounds(
        hospitals=config.hospitals, rounds=config.num_server_rounds,
        num_parameters=num_parameters, learning_rate=config.server_learning_rate,
        update_bound=update_norm_bound(plain, num_parameters),
        input_bound=input_norm_bound(settings, num_parameters),
        coordinate_range=encoding_range(settings, num_parameters))


def _rows(name: str, bounds: InfluenceBounds, *, plain: bool = True) -> list[str]:
    u = "unbounded" if bounds.update_bound is None else f"{bounds.update_bound:.4g}"
    return [
        f"{name}: n={bounds.hospitals} R={bounds.rounds} d={bounds.num_parameters} "
        f"eta={bounds.learning_rate:g} U={u} K={bounds.input_bound:.6g} "
        f"range={bounds.coordinate_range:.4g}",
        (f"  plain : one hospital {bounds.plain_round:.4g} a round, "
         f"{bounds.over_run(bounds.plain_round):.4g} over the run; step <= "
         f"{bounds.plain_step:.4g}" if plain else
         "  plain : not available (distributed noise needs secure aggregation)"),
        f"  secure: one hospital {bounds.secure_round:.4g} a round, "
        f"{bounds.over_run(bounds.secure_round):.4g} over the run; step <= "
        f"{bounds.secure_step:.4g} (coordinates checked only: "
        f"{bounds.secure_round_coordinates_only:.4g} a round)",
    ]


def main() -> None:
    """Print the bounds for the default heart-disease run and a few variants of it."""
    from common.quiet import quiet_third_party

    quiet_third_party()  # before TensorFlow
    from common.models import build_model
    from common.tasks import task_for_config

    default = RunConfig()
    d = int(sum(w.size for w in build_model(task_for_config(default), seed=0).get_weights()))
    variants = {
        "default (heart-disease, dp patient)": default,
        "dp none": replace(default, dp_mode=DpMode.NONE),
        "dp none --clip-updates": replace(default, dp_mode=DpMode.NONE, clip_updates=True),
        "dp hospital, local noise": replace(default, dp_mode=DpMode.HOSPITAL),
        "dp hospital, distributed noise, h = 2": replace(
            default, dp_mode=DpMode.HOSPITAL, dp_noise_mode=NoiseMode.DISTRIBUTED,
            secagg_enabled=True, secagg_honest_contributors=2),
    }
    for name, config in variants.items():
        print("\n".join(_rows(name, influence_bounds(config, d),
                               plain=config.dp_noise_mode != NoiseMode.DISTRIBUTED)))


if __name__ == "__main__":
    main()
