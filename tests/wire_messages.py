"""Test helpers: real Flower Messages built and read through fedcare's wire format."""

import time
from dataclasses import replace

from flwr.app import Context, Message, Metadata, RecordDict

from common.wire.records import pack_request, unpack_reply
from common.wire.statistics import StatisticsSpec


def request_message(settings, weights, message_type="train", *, secagg=None, secagg_next=None,
                    src_node_id=1, dst_node_id=7, content=None):
    """A server -> hospital Message carrying `settings` and `weights` (or raw `content`)."""
    if content is None:
        content = pack_request(settings, weights, secagg=secagg, secagg_next=secagg_next)
    return Message(content=content, metadata=Metadata(
        run_id=1, message_id="m1", src_node_id=src_node_id, dst_node_id=dst_node_id,
        reply_to_message_id="", group_id="1", created_at=time.time(), ttl=3600.0,
        message_type=message_type))


def context_for(node_config, run_config=None, state=None):
    """A hospital's Flower Context."""
    return Context(run_id=1, node_id=7, node_config=node_config,
                   state=state if state is not None else RecordDict(),
                   run_config=run_config or {})


def reply_from(msg, kind="binary", columns=1, private=False):
    """Unpack a hospital's reply Message with the wire format (raises if malformed).

    ``private``: its statistics are a DP evaluation release (a DP run's), not exact sums.
    """
    assert not msg.has_error(), msg.error.reason if msg.has_error() else ""
    return unpack_reply(msg.content, statistics=StatisticsSpec(kind, columns, private))


def with_round(settings, server_round):
    """The same settings for another round."""
    return replace(settings, server_round=server_round)
