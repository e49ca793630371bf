"""The message types fedcare sends besides Flower's plain ``train`` and ``evaluate``.

Secure aggregation's stages are custom train actions (their names must be Python identifiers:
messages are ``train.secagg_advertise``, ...).
"""

SECAGG_ADVERTISE = "secagg_advertise"
SECAGG_SHARE = "secagg_share"
SECAGG_MASK = "secagg_mask"
SECAGG_CHECK = "secagg_check"
SECAGG_UNMASK = "secagg_unmask"
SECAGG_ACTIONS = (SECAGG_ADVERTISE, SECAGG_SHARE, SECAGG_MASK, SECAGG_CHECK, SECAGG_UNMASK)
# The consortium explanation, once after training (``common.explain.consortium``): a query
# message ``query.explain`` with the final weights; the reply is a DP release or a decline.
EXPLAIN = "explain"


def ledger_round_of(message_type: str, server_round: int) -> int:
    """The ledger round a request's release is charged under (the disclosure log's lookup).

    An explanation's request names the last round, and its release is charged under the one
    after it (the last round's update holds the last round's key on the training track).
    """
    return server_round + 1 if message_type.endswith(f".{EXPLAIN}") else server_round
