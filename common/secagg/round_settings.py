"""What a secure round's encoding and signatures are derived from: the round's own settings.

Every hospital derives the encoding's per-coordinate range, its fixed-point scale and the
settings it signs from the round settings alone (the same values for every hospital of the
round; peers that signed other values are refused by the protocol), so the server cannot hand
one hospital a range or scale of its own. The range is C + k sigma_share
(``update_vector.coordinate_range``): C the clip of the update that is encoded, sigma_share the
largest per-coordinate noise an honest hospital adds, k such that an honest coordinate is cut
with probability below 1e-9 per round. The rounding error r (about 1e-11 here) is left out of
sigma_share for the range; the range's k-sigma margin covers it.
"""

import math

from common.secagg.signatures import SecAggSettings
from common.secagg.update_vector import coordinate_range, unweighted_scale
from common.wire.modes import DpMode, NoiseMode
from common.wire.settings import RoundSettings

# Local hospital-level noise has stddev 2 z C (sensitivity 2C); distributed 2 z (C + r)/sqrt(h).
SENSITIVITY_IN_CLIPS = 2.0


def encoded_clip(settings: RoundSettings) -> float:
    """C of the update that is encoded: the clip every honest hospital applies before noise.

    Patient level and ``clip-updates`` clip to ``update-clipping-norm``, hospital level to
    ``clipping-norm``; a non-DP run without ``clip-updates`` has no clip, and its range is the
    run's ``secagg.clip-bound`` (see :func:`encoding_range`).
    """
    if settings.dp_mode == DpMode.HOSPITAL:
        return settings.clipping_norm
    return settings.update_clipping_norm


def noise_multiplier(settings: RoundSettings) -> float:
    """The z the round's honest hospitals use at most: the run's (distributed), the run's
    maximum (local hospital level: each hospital calibrates its own), 0 otherwise."""
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
    """The encoding's per-coordinate range (see the module docstring)."""
    unclipped = settings.dp_mode == DpMode.NONE and not settings.clip_updates
    if unclipped:
        return settings.secagg_clip_bound
    return coordinate_range(clip_norm=encoded_clip(settings), noise_stddev=share_stddev(settings),
                            num_parameters=num_parameters)


def encoding_scale(settings: RoundSettings, num_parameters: int) -> float:
    """The fixed-point scale: the sum of every hospital's input cannot wrap mod 2**64."""
    return unweighted_scale(coordinate_range=encoding_range(settings, num_parameters),
                            num_hospitals=settings.hospitals)


def signed_settings(settings: RoundSettings, num_parameters: int) -> SecAggSettings:
    """The privacy-relevant settings every hospital of the round signs with its keys."""
    return SecAggSettings(
        clip_norm=encoded_clip(settings), noise_multiplier=noise_multiplier(settings),
        honest=honest_contributors(settings), threshold=settings.secagg_threshold,
        encoding_scale=encoding_scale(settings, num_parameters),
        planned_rounds=settings.planned_rounds)
