"""What a secure round's encoding, signatures and sum bound are derived from: its own settings.

Every hospital derives the encoding's per-coordinate range, its fixed-point scale and the
settings it signs from the round settings alone (the same values for every hospital of the
round; peers that signed other values are refused by the protocol), so the server cannot hand
one hospital a range or scale of its own. Secure aggregation implies an update clip: C is the
run's update bound (``encoded_clip``; under ``dp none`` the run's ``update-clipping-norm``,
applied by ``encode_round_update``). The range is C + k sigma_share
(``update_vector.coordinate_range``): sigma_share the largest per-coordinate noise an honest
hospital adds, k such that an honest coordinate is cut with probability below 1e-9 per round.
The rounding error r (about 1e-11 here) is left out of sigma_share for the range; the range's
k-sigma margin covers it. The server checks the decoded sum of n inputs against
``sum_norm_bound``: n x (C + the noise's norm bound + r).
"""

import math

import numpy as np

from common.dp.clipping import clip_to_norm
from common.secagg.signatures import SecAggSettings
from common.secagg.update_vector import (
    EncodedUpdate,
    coordinate_range,
    encode_unweighted,
    noise_norm_bound,
    rounding_bound,
    unweighted_scale,
)
from common.types import NDArrays
from common.wire.modes import DpMode, NoiseMode
from common.wire.settings import RoundSettings

# Local hospital-level noise has stddev 2 z C (sensitivity 2C); distributed 2 z (C + r)/sqrt(h).
SENSITIVITY_IN_CLIPS = 2.0
# Relative slack of the sum's norm check: float32 rounding of a clipped update (as the plain
# path's server.validation.NORM_TOLERANCE).
SUM_NORM_TOLERANCE = 1e-5


def encoded_clip(settings: RoundSettings) -> float:
    """C of the update that is encoded: the clip every honest hospital applies before noise.

    Hospital level clips to ``clipping-norm``; patient level to ``update-clipping-norm``, and
    so does a non-DP run, with or without ``clip-updates`` (secure aggregation implies the
    clip: without one no bound on the sum would hold; :func:`encode_round_update` applies it).
    """
    if settings.dp_mode == DpMode.HOSPITAL:
        return settings.clipping_norm
    return settings.update_clipping_norm


def noise_multiplier(settings: RoundSettings) -> float:
    """The z the round's honest hospitals use at most: the run's (distributed), the run's
    maximum (local hospital level: each hospital calibrates its own), 0 otherwise.
    """
    if settings.dp_mode != DpMode.HOSPITAL:
        return 0.0
    if settings.noise_mode == NoiseMode.DISTRIBUTED:
        return settings.noise_multiplier
    return settings.max_noise_multiplier


def honest_contributors(settings: RoundSettings) -> int:
    """h, the divisor's count of distributed noise (1 otherwise: each hospital's full noise)."""
    if settings.dp_mode == DpMode.HOSPITAL and settings.noise_mode == NoiseMode.DISTRIBUTED:
        return max(1, settings.honest_contributors)
    return 1


def share_stddev(settings: RoundSettings) -> float:
    """The largest per-coordinate noise stddev an honest hospital adds to its encoded update."""
    return (noise_multiplier(settings) * SENSITIVITY_IN_CLIPS * encoded_clip(settings)
            / math.sqrt(honest_contributors(settings)))


def encoding_range(settings: RoundSettings, num_parameters: int) -> float:
    """The encoding's per-coordinate range, C + k sigma_share (see the module docstring)."""
    return coordinate_range(clip_norm=encoded_clip(settings), noise_stddev=share_stddev(settings),
                            num_parameters=num_parameters)


def encoding_scale(settings: RoundSettings, num_parameters: int) -> float:
    """The fixed-point scale: the sum of every hospital's input cannot wrap mod 2**64."""
    return unweighted_scale(coordinate_range=encoding_range(settings, num_parameters),
                            num_hospitals=settings.hospitals)


def input_norm_bound(settings: RoundSettings, num_parameters: int) -> float:
    """K = C + noise bound + r: the L2 norm no honest hospital's encoded input exceeds.

    The update is clipped to C; its noise (stddev at most 2 z (C + r) / sqrt(h), z the
    round's largest) has L2 norm below ``noise_norm_bound`` but with probability 1e-14; cutting
    coordinates to the range only shortens the vector; rounding adds at most r = sqrt(d)/scale.
    """
    r = rounding_bound(num_parameters=num_parameters,
                       scale=encoding_scale(settings, num_parameters))
    stddev = (noise_multiplier(settings) * SENSITIVITY_IN_CLIPS * (encoded_clip(settings) + r)
              / math.sqrt(honest_contributors(settings)))
    noise = noise_norm_bound(noise_stddev=stddev, num_parameters=num_parameters)
    return encoded_clip(settings) + noise + r


def sum_norm_bound(settings: RoundSettings, num_parameters: int, num_summands: int) -> float:
    """The L2 norm the decoded sum of `num_summands` honest inputs cannot exceed: n x K.

    A larger sum aborts the round (``update_vector.decode_unweighted_mean``): some input was
    beyond its bound. Hence the mean moves by at most K, and one hospital moves it by at most 2K
    more than an honest input of its own would (docs/reliability-influence.md).
    """
    return (num_summands * input_norm_bound(settings, num_parameters)
            * (1 + SUM_NORM_TOLERANCE))


def encode_round_update(update: NDArrays, settings: RoundSettings, *,
                        rng: np.random.Generator) -> EncodedUpdate:
    """A hospital's update as it enters the round's sum: clipped, cut to the range, encoded.

    Under ``dp none`` the update is clipped to L2 norm C here (secure aggregation implies the
    clip); a DP update arrives clipped (patient level) or clipped and noised (hospital level).
    """
    d = sum(int(np.size(array)) for array in update)
    if settings.dp_mode == DpMode.NONE:
        update, _ = clip_to_norm(update, clipping_norm=encoded_clip(settings))
    return encode_unweighted(update, coordinate_range=encoding_range(settings, d),
                             scale=encoding_scale(settings, d), rng=rng)


def signed_settings(settings: RoundSettings, num_parameters: int) -> SecAggSettings:
    """The privacy-relevant settings every hospital of the round signs with its keys."""
    return SecAggSettings(
        clip_norm=encoded_clip(settings), noise_multiplier=noise_multiplier(settings),
        honest=honest_contributors(settings), threshold=settings.secagg_threshold,
        encoding_scale=encoding_scale(settings, num_parameters),
        planned_rounds=settings.planned_rounds)
