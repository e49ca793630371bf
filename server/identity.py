"""Which hospital each node is: fixed from what authenticated the node, never from a claim.

In deployment the SuperLink knows each node by the name its public key was registered under
(``flwr supernode register KEY --name NAME``); that name is the hospital's (one name
everywhere: SuperNode, ledger, roster). In simulation nodes have random ids and no names, so a
node is bound to a hospital only by a proof: its reply's identity signed with that hospital's
Ed25519 key from the run's roster, over the run, the round, the name and the node id
(``common.identity_proof``; every simulated hospital signs every reply, so it needs no memory
of whether it was bound). A reply claiming an identity without a valid proof is refused and
blamed on the node that sent it only, so an impostor can neither take an honest hospital's
place nor get it excluded. Two nodes that prove one identity (one key in two places) are both
refused. After binding, a reply whose claimed identity differs from its node's is refused.

Without a roster and without registered names (``flwr run .``'s simulation engine, runs of
fewer than 3 hospitals) nothing can prove a name: the first reply fixes the mapping, which is
logged as a warning and recorded as unproved in ``identities.json``.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from common.identity_proof import identity_proven
from common.secagg.roster import Roster
from common.wire.replies import HospitalIdentity, RoundRef

logger = logging.getLogger(__name__)

BOUND_BY_NAME = "registered name"
BOUND_BY_PROOF = "identity proof (roster key)"
BOUND_BY_CLAIM = "first reply (unproved: no roster)"


@dataclass
class IdentityBook:
    """Node id -> hospital identity for one run (the server's only per-run identity state).

    Parameters
    ----------
    hospitals : list of str
        The run's hospital names, by index.
    registered : mapping of node id -> name
        Names the SuperLink holds for authenticated nodes (deployment); empty in simulation.
    roster : Roster, optional
        The consortium roster whose keys prove an unnamed node's identity (simulation); None:
        no proof is possible and a first reply's claim is taken (with a warning).
    """

    hospitals: list[str]
    registered: Mapping[int, str] = field(default_factory=dict)
    roster: Roster | None = None
    bound: dict[int, HospitalIdentity] = field(default_factory=dict)
    bound_by: dict[int, str] = field(default_factory=dict)
    # Non-DP weighted runs: each hospital's training rows, fixed at its first reply.
    examples: dict[str, int] = field(default_factory=dict)
    _warned: bool = field(default=False, init=False, repr=False)

    def expected(self, name: str) -> HospitalIdentity | None:
        """The run's identity for hospital `name` (None: not one of the run's hospitals)."""
        if name not in self.hospitals:
            return None
        return HospitalIdentity(name, self.hospitals.index(name))

    def resolve(self, claims: Iterable[tuple[int, HospitalIdentity]], answers: RoundRef
                ) -> tuple[dict[int, HospitalIdentity], dict[int, str]]:
        """Check one exchange's claims (replies to the request `answers`); bind new nodes.

        Returns (node id -> identity accepted, node id -> why its reply is refused).
        """
        accepted: dict[int, HospitalIdentity] = {}
        refused: dict[int, str] = {}
        first_contact: dict[HospitalIdentity, list[int]] = defaultdict(list)
        for node, claim in claims:
            own = self.bound.get(node) or self._registered_identity(node)
            problem = self._claim_problem(node, claim, own, answers)
            if problem:
                refused[node] = problem
            elif own is not None:
                accepted[node] = own
                if node not in self.bound:
                    self._bind(node, own, BOUND_BY_NAME)
            else:
                first_contact[claim].append(node)
        taken = {identity: node for node, identity in self.bound.items()}
        for claim, nodes in first_contact.items():
            owner = taken.get(claim)
            if owner is not None or len(nodes) > 1:
                claimants = sorted(nodes + ([owner] if owner is not None else []))
                for node in nodes:
                    refused[node] = (f"nodes {claimants} all claim {claim.name!r}; a node that "
                                     "claims an identity already taken is refused")
                continue
            self._bind(nodes[0], claim, BOUND_BY_CLAIM if self.roster is None else BOUND_BY_PROOF)
            accepted[nodes[0]] = self.bound[nodes[0]]
        return accepted, refused

    def _claim_problem(self, node: int, claim: HospitalIdentity, own: HospitalIdentity | None,
                       answers: RoundRef) -> str:
        """Why node `node`'s claim is refused ('' when it is not)."""
        if own is None and node in self.registered:
            return (f"node {node} is registered as {self.registered[node]!r}, which is not one "
                    "of the run's hospitals")
        if self.expected(claim.name) != claim:
            return (f"node {node} claims {claim.name!r} with index {claim.index}, which is not "
                    "one of the run's hospitals")
        if own is not None:
            return "" if claim == own else (f"node {node} is {own.name!r} but its reply claims "
                                            f"{claim.name!r}")
        return self._proof_problem(node, claim, answers)

    def _proof_problem(self, node: int, claim: HospitalIdentity, answers: RoundRef) -> str:
        """Why an unbound, unnamed node's claim is not proved ('' when it is, or cannot be)."""
        if self.roster is None:
            if not self._warned:
                self._warned = True
                logger.warning("no roster and no registered names: each node's first reply "
                               "fixes which hospital it is, unproved (fedcare simulate and "
                               "deployment prove it)")
            return ""
        if claim.proof is None:
            return (f"node {node} claims {claim.name!r} without an identity proof (a simulated "
                    "hospital signs its replies with its roster key)")
        if claim.name not in self.roster.names:
            return f"node {node} claims {claim.name!r}, which is not on the roster"
        if not identity_proven(self.roster.public_key(claim.name), claim.proof,
                               run_id=answers.run_id, server_round=answers.server_round,
                               name=claim.name, node_id=node):
            return (f"node {node} claims {claim.name!r}, but its identity proof does not verify "
                    f"under {claim.name!r}'s roster key for this node, run and round")
        return ""

    def _bind(self, node: int, identity: HospitalIdentity, how: str) -> None:
        self.bound[node] = HospitalIdentity(identity.name, identity.index)
        self.bound_by[node] = how

    def _registered_identity(self, node: int) -> HospitalIdentity | None:
        name = self.registered.get(node)
        return None if name is None else self.expected(name)

    def describe(self) -> dict[str, dict[str, str]]:
        """Node id -> the hospital it is bound to and by what (for the run directory)."""
        return {str(node): {"hospital": identity.name,
                            "bound_by": self.bound_by.get(node, BOUND_BY_CLAIM)}
                for node, identity in sorted(self.bound.items())}

    def name_of(self, node: int) -> str:
        """The hospital a node is bound to, or ``node <id>`` for a node not (yet) bound."""
        identity = self.bound.get(node)
        return identity.name if identity is not None else f"node {node}"


class Node(Protocol):
    """A node as ``grid.get_nodes()`` lists it (Flower's NodeInfo; ``name`` when registered)."""

    @property
    def node_id(self) -> int:
        """The node's id on the grid."""


def registered_names(nodes: Iterable[Node]) -> dict[int, str]:
    """Node id -> registered name from Flower's ``grid.get_nodes()`` (unnamed nodes skipped)."""
    names = {}
    for node in nodes:
        name = getattr(node, "name", "")
        if isinstance(name, str) and name:
            names[int(node.node_id)] = name
    return names
