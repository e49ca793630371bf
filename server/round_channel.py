"""How one round reaches its hospitals: the one value the plain and the secure round both take.

The driver (``server.federation``) builds it at the start of each round; a round's exchanges
(train, secure-aggregation stages, evaluate) all go through its grid and strategy, before its
deadline, and every reply is screened against its rules and identity book.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import Message
from flwr.serverapp import Grid

from server.exchange import send_and_receive
from server.identity import IdentityBook
from server.screening import ReplyRules, Screened, screen_replies
from server.strategy import FedcareStrategy


@dataclass(frozen=True, slots=True)
class RoundChannel:
    """One round's way to its hospitals and back.

    Attributes
    ----------
    grid : Grid
        Flower's grid (or an in-process one): where the messages go.
    strategy : FedcareStrategy
        Picks the nodes, addresses the messages, aggregates (its optimizer keeps state across
        rounds).
    book : IdentityBook
        Which node is which hospital (bound on its first reply, or proved).
    rules : ReplyRules
        What the round's settings allow in a reply.
    timeout : float
        Seconds each exchange of the round waits for its replies.
    """

    grid: Grid
    strategy: FedcareStrategy
    book: IdentityBook
    rules: ReplyRules
    timeout: float

    def exchange(self, messages: Iterable[Message],
                 expected: tuple[type, ...]) -> tuple[Screened, int]:
        """Send `messages`, wait for the replies and screen them as `expected` kinds.

        Returns the screened replies and how many messages got no reply before the deadline.
        """
        sent = list(messages)
        replies = send_and_receive(self.grid, sent, timeout=self.timeout)
        return screen_replies(replies, self.rules, self.book, expected), len(sent) - len(replies)
