"""Which hospital each node is: fixed from what authenticated the node, never from a claim.

In deployment the SuperLink knows each node by the name its public key was registered under
(``flwr supernode register KEY --name NAME``); that name is the hospital's (one name
everywhere: SuperNode, ledger, roster). In simulation nodes have random keys and no names, so
the first reply fixes the mapping for the run; two nodes that claim one identity before that
are both refused for the round. After that, a reply whose claimed identity differs from its
node's is refused and blamed on the node that sent it, so no honest hospital is excluded or
blamed for another's reply.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from common.wire.replies import HospitalIdentity


@dataclass
class IdentityBook:
    """Node id -> hospital identity for one run (the server's only per-run identity state).

    Parameters
    ----------
    hospitals : list of str
        The run's hospital names, by index.
    registered : mapping of node id -> name
        Names the SuperLink holds for authenticated nodes (deployment); empty in simulation.
    """

    hospitals: list[str]
    registered: Mapping[int, str] = field(default_factory=dict)
    bound: dict[int, HospitalIdentity] = field(default_factory=dict)
    # Non-DP weighted runs: each hospital's training rows, fixed at its first reply.
    examples: dict[str, int] = field(default_factory=dict)

    def expected(self, name: str) -> HospitalIdentity | None:
        """The run's identity for hospital `name` (None: not one of the run's hospitals)."""
        if name not in self.hospitals:
            return None
        return HospitalIdentity(name, self.hospitals.index(name))

    def resolve(self, claims: Iterable[tuple[int, HospitalIdentity]]
                ) -> tuple[dict[int, HospitalIdentity], dict[int, str]]:
        """Check one exchange's claims; bind nodes seen for the first time.

        Returns (node id -> identity accepted, node id -> why its reply is refused).
        """
        accepted: dict[int, HospitalIdentity] = {}
        refused: dict[int, str] = {}
        first_contact: dict[HospitalIdentity, list[int]] = defaultdict(list)
        for node, claim in claims:
            own = self.bound.get(node) or self._registered_identity(node)
            if own is None and node in self.registered:
                refused[node] = (f"node {node} is registered as {self.registered[node]!r}, "
                                 "which is not one of the run's hospitals")
            elif self.expected(claim.name) != claim:
                refused[node] = (f"node {node} claims {claim.name!r} with index {claim.index}, "
                                 "which is not one of the run's hospitals")
            elif own is not None and claim != own:
                refused[node] = (f"node {node} is {own.name!r} but its reply claims "
                                 f"{claim.name!r}")
            elif own is not None:
                accepted[node] = own
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
            self.bound[nodes[0]] = claim
            accepted[nodes[0]] = claim
        for node, identity in accepted.items():
            self.bound.setdefault(node, identity)
        return accepted, refused

    def _registered_identity(self, node: int) -> HospitalIdentity | None:
        name = self.registered.get(node)
        return None if name is None else self.expected(name)

    def describe(self) -> dict[str, dict[str, str]]:
        """Node id -> the hospital it is bound to and by what (for the run directory)."""
        return {str(node): {"hospital": identity.name,
                            "bound_by": ("registered name" if self.registered.get(node)
                                         == identity.name else "first reply")}
                for node, identity in sorted(self.bound.items())}

    def name_of(self, node: int) -> str:
        """The hospital a node is bound to, or ``node <id>`` for a node not (yet) bound."""
        identity = self.bound.get(node)
        return identity.name if identity is not None else f"node {node}"


def registered_names(nodes: Iterable[object]) -> dict[int, str]:
    """Node id -> registered name from Flower's ``grid.get_nodes()`` (unnamed nodes skipped)."""
    names = {}
    for node in nodes:
        name = getattr(node, "name", "")
        if isinstance(name, str) and name:
            names[int(getattr(node, "node_id"))] = name
    return names
