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
