"""What each part of a reply is, privacy-wise: a DP release on a ledger track, or not covered.

The privacy statement is derived from the manifest (``common.wire.replies.MANIFEST``) and this
declaration, never written by hand: for a run's mode, every part a reply of that mode may
carry, and every header field every reply carries, is either a DP release (with the ledger
track it is charged on) or listed as not covered, with why. ``undeclared_fields`` names any
field of a reply type this module does not declare, so a new field cannot leave a hospital
unlisted (a test holds it at none). The report (``server.report``) and the docs' lead
paragraphs state exactly this list.
"""

from dataclasses import dataclass, fields

from common.wire.modes import DpMode, LedgerTrack, NoiseMode
from common.wire.replies import (
    MANIFEST,
    DeclinedReply,
    EvaluateReply,
    ExplainReply,
    SecAggStageReply,
    TrainReply,
    allowed_parts,
)


@dataclass(frozen=True, slots=True)
class PartStatement:
    """One reply part: what it is, and under DP whether it is a DP release or why not.

    ``track`` is the ledger track a DP release is charged on (None: not a DP release);
    ``why`` says why a part that is not a release is not covered; ``short`` is the words the
    docs' lead paragraphs use for it (a test holds them to these).
    """

    part: str
    what: str
    track: LedgerTrack | None = None
    why: str = ""
    short: str = ""


# Header fields every reply carries (``common.wire.records.pack_reply``'s reply record).
HEADER = ("hospital", "answers", "reason")
_PARTS = {
    "update": PartStatement(
        "update", "the training update (clipped; noised by the hospital; masked under secure "
        "aggregation)", LedgerTrack.TRAIN, short="training updates"),
    "secagg": PartStatement(
        "secagg", "secure aggregation's payloads: signed keys, encrypted shares and the masked "
        "update (the update's release, masked)", LedgerTrack.TRAIN,
        short="training updates"),
    "statistics": PartStatement(
        "statistics", "the evaluation of a model on the hospital's test rows: correct and "
        "incorrect counts and a 4-bin score histogram per label, noised, with the noise's "
        "stddev", LedgerTrack.TEST, short="evaluation"),
    "attributions": PartStatement(
        "attributions", "the consortium explanation, once after training: the sum of the "
        "training rows' absolute attributions under the final model (each row's vector "
        "clipped to L2 bound B) and the row count, noised", LedgerTrack.TRAIN,
        short="consortium explanation"),
    "privacy": PartStatement(
        "privacy", "the epsilon spent per level and the hospital's budget", None,
        "through the sample rate q = batch / rows the epsilon spent depends on the hospital's "
        "number of training rows; the budget is the hospital's setting",
        short="epsilon spent"),
    "num_examples": PartStatement("num_examples", "the number of training rows", None,
                                  "sent only without DP", short="example count"),
    "train_loss": PartStatement("train_loss", "the training loss", None, "sent only without DP",
                                short="training loss"),
    "encoding_clipped": PartStatement(
        "encoding_clipped", "how many coordinates secure aggregation's encoding cut", None,
        "sent only without DP", short="encoding cuts"),
    "hospital": PartStatement(
        "hospital", "which hospital replied (its name and index, signed)", None,
        "participation: the server learns who took part in each round and who did not",
        short="participation"),
    "answers": PartStatement(
        "answers", "which run and round the reply answers", None,
        "timing: the server learns when each hospital replied", short="timing"),
    "reason": PartStatement(
        "reason", "a decline's reason (e.g. a spent budget, a refused setting)", None,
        "decline reasons tell the server why a hospital did not take part",
        short="decline reasons"),
    "secagg_next": PartStatement(
        "secagg_next", "the next round's signed public keys (secure aggregation)", None,
        "protocol keys: no data, but they show the hospital will take part next round",
        short="next round's keys"),
}


def part_statement(part: str) -> PartStatement:
    """The declaration of one reply part (KeyError: an undeclared part)."""
    return _PARTS[part]


def undeclared_fields() -> list[str]:
    """Fields of the reply types that no statement declares (empty when all are)."""
    names = {f.name for kind in (TrainReply, DeclinedReply, EvaluateReply, SecAggStageReply,
                                 ExplainReply) for f in fields(kind)}
    return sorted(names - set(_PARTS))


def reply_parts(dp_mode: DpMode, noise_mode: NoiseMode, secure: bool) -> tuple[str, ...]:
    """Every part a hospital's replies may carry in this mode: the header, then the manifest's."""
    manifest = allowed_parts(dp_mode, noise_mode, secure)
    extra = ("secagg_next",) if secure else ()
    return (*HEADER, *sorted(manifest), *extra)


def covered(dp_mode: DpMode, noise_mode: NoiseMode, secure: bool) -> list[PartStatement]:
    """The parts that are DP releases in this mode (none without DP)."""
    if dp_mode == DpMode.NONE:
        return []
    return [_PARTS[p] for p in reply_parts(dp_mode, noise_mode, secure)
            if _PARTS[p].track is not None]


def not_covered(dp_mode: DpMode, noise_mode: NoiseMode, secure: bool) -> list[PartStatement]:
    """The parts that are not DP releases in this mode, each with why (all of them without
    DP).
    """
    if dp_mode == DpMode.NONE:
        return [_PARTS[p] for p in reply_parts(dp_mode, noise_mode, secure)]
    return [_PARTS[p] for p in reply_parts(dp_mode, noise_mode, secure)
            if _PARTS[p].track is None]


def statement_lines(dp_mode: DpMode, noise_mode: NoiseMode, secure: bool) -> list[str]:
    """The statement's two lists in words: each release with its track, each exclusion with
    why.
    """
    lines = []
    for part in covered(dp_mode, noise_mode, secure):
        track = ("test track" if part.track == LedgerTrack.TEST else "training track")
        if dp_mode == DpMode.HOSPITAL:
            track += " (hospital level: one track over both, composing with training)"
        lines.append(f"- covered: {part.what} (`{part.part}`): a Gaussian DP release charged on "
                     f"the hospital's ledger, {track}, before it is sent")
    for part in not_covered(dp_mode, noise_mode, secure):
        why = part.why or "no DP in this run"
        lines.append(f"- not covered: {part.what} (`{part.part}`): {why}")
    return lines


def all_modes() -> list[tuple[DpMode, NoiseMode, bool]]:
    """Every mode a reply exists for (the manifest's keys)."""
    return list(MANIFEST)


__all__ = ["HEADER", "PartStatement", "all_modes", "covered", "not_covered", "part_statement",
           "reply_parts", "statement_lines", "undeclared_fields"]
