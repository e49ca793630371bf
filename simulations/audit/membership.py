"""Membership inference on real records: attack scores, ROC metrics and the DP bound on TPR.

Loss-threshold attack (Yeom et al., CSF 2018) and LiRA, the likelihood-ratio attack of Carlini
et al., "Membership Inference Attacks From First Principles" (IEEE S&P 2022; Sec. IV and
Algorithm 1: logit-scaled confidences, Gaussian fits of in/out shadow confidences, online and
offline variants), reported at low FPR as its Sec. III argues. An (eps, delta)-DP run bounds
any test's TPR by e^eps FPR + delta and 1 - e^-eps (1 - delta - FPR) (Kairouz et al., ICML 2015).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.special
import scipy.stats
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = [
    "DEFAULT_FPRS",
    "MIAMetrics",
    "dp_tpr_bound",
    "lira_offline",
    "lira_online",
    "logit_confidence_from_logits",
    "logit_confidence_from_loss",
    "loss_threshold_score",
    "mia_metrics",
    "roc",
    "roc_auc",
    "tpr_at_fpr",
]

DEFAULT_FPRS = (0.001, 0.01, 0.05)


def _scores_1d(name: str, scores) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array; got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"{name} contains NaN")
    return scores


def _labelled(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    members = _scores_1d("member_scores", member_scores)
    nonmembers = _scores_1d("nonmember_scores", nonmember_scores)
    labels = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    return labels, np.concatenate([members, nonmembers])


def roc(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve of the test "member if score >= t", over every threshold t.

    Parameters
    ----------
    member_scores, nonmember_scores : array_like
        1-D attack scores of members and non-members; higher means "more likely member".

    Returns
    -------
    fpr, tpr : numpy.ndarray
        Non-decreasing false- and true-positive rates (fractions in [0, 1]), from (0, 0) to
        (1, 1), one point per distinct score (scikit-learn's ``roc_curve``, no points dropped).
    """
    labels, scores = _labelled(member_scores, nonmember_scores)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return fpr, tpr


def roc_auc(member_scores, nonmember_scores) -> float:
    """Area under the ROC curve: P[member score > non-member score] (+ half the ties).

    Parameters
    ----------
    member_scores, nonmember_scores : array_like
        1-D attack scores; higher means "more likely member".

    Returns
    -------
    float
        In [0, 1]; 0.5 for an attack no better than chance, 1 for perfectly separated scores.
    """
    labels, scores = _labelled(member_scores, nonmember_scores)
    return float(roc_auc_score(labels, scores))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float) -> float:
    """Largest TPR of a threshold test whose FPR is at most ``fpr``.

    Parameters
    ----------
    member_scores, nonmember_scores : array_like
        1-D attack scores; higher means "more likely member".
    fpr : float
        Target false-positive rate, a fraction in [0, 1] (0.01 is 1%).

    Returns
    -------
    float
        ``max {TPR(t) : FPR(t) <= fpr}`` over thresholds t, no interpolation (so never more
        than a threshold actually achieves). With n non-members, FPRs below 1/n can only be
        met at FPR 0: the figure is then the TPR at zero false positives.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1]; got {fpr!r}")
    fprs, tprs = roc(member_scores, nonmember_scores)
    return float(tprs[fprs <= fpr].max())


@dataclass(frozen=True)
class MIAMetrics:
    """Membership-inference metrics of one attack.

    Attributes
    ----------
    auc : float
        ROC AUC.
    tpr_at_fpr : dict of float to float
        TPR (fraction) at each target FPR (fraction).
    n_members, n_nonmembers : int
        Sample sizes; FPRs below ``1 / n_nonmembers`` are not resolved.
    fpr, tpr : numpy.ndarray
        The ROC curve (for plotting; left out of :meth:`to_dict`).
    """

    auc: float
    tpr_at_fpr: dict[float, float]
    n_members: int
    n_nonmembers: int
    fpr: np.ndarray = field(repr=False, compare=False)
    tpr: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        """JSON-able dict: AUC, TPR per FPR (keys like ``"0.01"``), sample sizes."""
        return {
            "auc": self.auc,
            "tpr_at_fpr": {f"{k:g}": v for k, v in self.tpr_at_fpr.items()},
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "min_resolved_fpr": 1.0 / self.n_nonmembers,
        }


def mia_metrics(
    member_scores, nonmember_scores, fprs: Sequence[float] = DEFAULT_FPRS
) -> MIAMetrics:
    """AUC and TPR at each of ``fprs`` for one attack's scores.

    Parameters
    ----------
    member_scores, nonmember_scores : array_like
        1-D attack scores; higher means "more likely member".
    fprs : sequence of float, default (0.001, 0.01, 0.05)
        Target FPRs (fractions).

    Returns
    -------
    MIAMetrics
        See :func:`roc_auc` and :func:`tpr_at_fpr` for the definitions.
    """
    members = _scores_1d("member_scores", member_scores)
    nonmembers = _scores_1d("nonmember_scores", nonmember_scores)
    fpr, tpr = roc(members, nonmembers)
    for f in fprs:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"fprs must be in [0, 1]; got {f!r}")
    return MIAMetrics(
        auc=roc_auc(members, nonmembers),
        tpr_at_fpr={float(f): float(tpr[fpr <= f].max()) for f in fprs},
        n_members=int(members.size),
        n_nonmembers=int(nonmembers.size),
        fpr=fpr,
        tpr=tpr,
    )


def dp_tpr_bound(fpr, eps: float, delta: float, symmetric: bool = True):
    """Highest TPR any membership test can reach at ``fpr`` against an (eps, delta)-DP run.

    Parameters
    ----------
    fpr : float or array_like
        False-positive rate(s), fractions in [0, 1].
    eps : float
        Epsilon (natural-log units), ``>= 0``.
    delta : float
        Delta, in [0, 1].
    symmetric : bool, default True
        Also apply the bound obtained by swapping the roles of the two neighbouring datasets,
        ``TPR <= 1 - e^-eps (1 - delta - FPR)``, which is the tighter one at high FPR.

    Returns
    -------
    float or numpy.ndarray
        ``min(1, e^eps FPR + delta[, 1 - e^-eps (1 - delta - FPR)])``. Tight: randomized
        response with accuracy ``e^eps / (1 + e^eps)`` attains it at ``FPR = 1 / (1 + e^eps)``.
    """
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be finite and >= 0; got {eps!r}")
    if not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta must be in [0, 1]; got {delta!r}")
    x = np.asarray(fpr, dtype=np.float64)
    if np.any((x < 0) | (x > 1)):
        raise ValueError("fpr must be in [0, 1]")
    bound = np.minimum(1.0, np.exp(eps) * x + delta)
    if symmetric:
        bound = np.minimum(bound, 1.0 - np.exp(-eps) * (1.0 - delta - x))
    bound = np.clip(bound, 0.0, 1.0)
    return float(bound) if bound.ndim == 0 else bound


def loss_threshold_score(losses) -> np.ndarray:
    """Loss-threshold attack score (Yeom et al. 2018): the negative per-example loss.

    Parameters
    ----------
    losses : array_like
        Per-example losses of the attacked model (e.g. cross-entropy in nats), 1-D.

    Returns
    -------
    numpy.ndarray
        ``-losses``: members, fitted during training, tend to have lower loss, so higher
        score means "more likely member".
    """
    return -_scores_1d("losses", losses)


def logit_confidence_from_loss(losses) -> np.ndarray:
    """LiRA's logit-scaled confidence ``log(p / (1 - p))`` from cross-entropy losses.

    Parameters
    ----------
    losses : array_like
        Per-example cross-entropy losses in nats (``p = exp(-loss)`` is the probability the
        model gives the true label), any shape, ``>= 0``.

    Returns
    -------
    numpy.ndarray
        ``-loss - log(1 - exp(-loss))``, computed stably; losses below the smallest positive
        float are clipped to it so that the result stays finite (about 708).
    """
    losses = np.asarray(losses, dtype=np.float64)
    if np.any(losses < 0) or np.isnan(losses).any():
        raise ValueError("losses must be >= 0 and not NaN")
    losses = np.maximum(losses, np.finfo(np.float64).tiny)
    return -losses - np.log(-np.expm1(-losses))


def logit_confidence_from_logits(logits, labels) -> np.ndarray:
    """LiRA's logit-scaled confidence of the true label, from a model's logits.

    Parameters
    ----------
    logits : array_like
        Shape (n, classes) for softmax outputs, or (n,) / (n, 1) for one sigmoid logit.
    labels : array_like
        Shape (n,): class indices (0/1 for a sigmoid model).

    Returns
    -------
    numpy.ndarray
        Shape (n,): ``z_y - logsumexp(z_j, j != y)`` for softmax, ``+z`` or ``-z`` for a
        sigmoid; equal to ``log(p_y / (1 - p_y))`` and finite for any finite logits.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    if z.ndim == 1:
        if z.shape[0] != y.size or not np.all((y == 0) | (y == 1)):
            raise ValueError("a sigmoid model needs n logits and 0/1 labels")
        return np.where(y == 1, z, -z)
    if z.ndim != 2 or z.shape[0] != y.size or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (n, classes >= 2); got {z.shape}")
    if np.any((y < 0) | (y >= z.shape[1])):
        raise ValueError("labels out of range")
    rows = np.arange(y.size)
    true = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    return true - scipy.special.logsumexp(others, axis=1)


def _gaussian_fit(
    values: np.ndarray, mask: np.ndarray, fix_variance: bool, min_std: float, which: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example median and standard deviation of ``values[mask]`` down each column."""
    counts = mask.sum(axis=0)
    need = 1 if fix_variance else 2
    short = np.flatnonzero(counts < need)
    if short.size:
        raise ValueError(
            f"{short.size} example(s) have fewer than {need} '{which}' shadow models "
            f"(first: {short[:5].tolist()})"
        )
    masked = np.where(mask, values, np.nan)
    centre = np.nanmedian(masked, axis=0)
    deviations = masked - centre
    if fix_variance:
        pooled = np.sqrt(np.nanmean(deviations**2))
        std = np.full(values.shape[1], pooled)
    else:
        std = np.sqrt(np.nanmean(deviations**2, axis=0))
    return centre, np.maximum(std, min_std)


def _shadow_arrays(target_confidence, shadow_confidence, shadow_in):
    target = _scores_1d("target_confidence", target_confidence)
    shadows = np.asarray(shadow_confidence, dtype=np.float64)
    membership = np.asarray(shadow_in, dtype=bool)
    if shadows.ndim != 2 or shadows.shape[1] != target.size:
        raise ValueError(
            f"shadow_confidence must have shape (shadows, {target.size}); got {shadows.shape}"
        )
    if membership.shape != shadows.shape:
        raise ValueError(f"shadow_in must have shape {shadows.shape}; got {membership.shape}")
    if not np.all(np.isfinite(shadows)) or not np.all(np.isfinite(target)):
        raise ValueError("confidences must be finite")
    return target, shadows, membership


def lira_online(
    target_confidence,
    shadow_confidence,
    shadow_in,
    *,
    fix_variance: bool = True,
    min_std: float = 1e-6,
) -> np.ndarray:
    """Online LiRA score: log-likelihood ratio of "in" vs "out" Gaussians, per example.

    Parameters
    ----------
    target_confidence : array_like
        Shape (n,): logit-scaled confidence of the attacked model on each example (see
        :func:`logit_confidence_from_loss`).
    shadow_confidence : array_like
        Shape (shadows, n): the same confidence under each shadow model.
    shadow_in : array_like
        bool, shape (shadows, n): whether the example was in that shadow model's training data.
        Every example needs at least one "in" and one "out" shadow (two each when
        ``fix_variance`` is False).
    fix_variance : bool, default True
        Share one variance per side across examples (pooled squared deviations from each
        example's median), which the paper recommends with few shadow models; otherwise each
        example gets its own.
    min_std : float, default 1e-6
        Floor on the fitted standard deviations (confidence units).

    Returns
    -------
    numpy.ndarray
        Shape (n,): ``log N(c; mu_in, s_in^2) - log N(c; mu_out, s_out^2)`` (nats), the
        centres being per-example medians as in the paper's code; higher means "more likely
        member".
    """
    target, shadows, membership = _shadow_arrays(target_confidence, shadow_confidence, shadow_in)
    mu_in, s_in = _gaussian_fit(shadows, membership, fix_variance, min_std, "in")
    mu_out, s_out = _gaussian_fit(shadows, ~membership, fix_variance, min_std, "out")
    return scipy.stats.norm.logpdf(target, mu_in, s_in) - scipy.stats.norm.logpdf(
        target, mu_out, s_out
    )


def lira_offline(
    target_confidence,
    shadow_confidence,
    shadow_in=None,
    *,
    fix_variance: bool = True,
    min_std: float = 1e-6,
) -> np.ndarray:
    """Offline LiRA score: how far above the "out" shadows' confidences the target's lies.

    Parameters
    ----------
    target_confidence : array_like
        Shape (n,): logit-scaled confidence of the attacked model on each example.
    shadow_confidence : array_like
        Shape (shadows, n): the same confidence under each shadow model.
    shadow_in : array_like, optional
        bool, shape (shadows, n): entries that are True (example in that shadow's training
        data) are ignored. Omitted: every shadow was trained without every example.
    fix_variance : bool, default True
        Share one variance across examples (see :func:`lira_online`).
    min_std : float, default 1e-6
        Floor on the fitted standard deviation.

    Returns
    -------
    numpy.ndarray
        Shape (n,): ``-log P[Z > c]`` for ``Z ~ N(mu_out, s_out^2)`` (nats), the one-sided
        test of the paper's offline attack; higher means "more likely member". (The paper's
        code uses the two-sided density instead, which also flags unusually low confidences.)
    """
    target = _scores_1d("target_confidence", target_confidence)
    shadows = np.asarray(shadow_confidence, dtype=np.float64)
    if shadow_in is None:
        shadow_in = np.zeros(shadows.shape, dtype=bool)
    target, shadows, membership = _shadow_arrays(target, shadows, shadow_in)
    mu_out, s_out = _gaussian_fit(shadows, ~membership, fix_variance, min_std, "out")
    return -scipy.stats.norm.logsf(target, mu_out, s_out)
