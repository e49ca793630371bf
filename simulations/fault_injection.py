"""Fault drills: run a simulation in which one hospital misbehaves, to see the federation cope.

A Flower mod wraps the hospital ClientApp of one hospital (by partition id) and, in the chosen
rounds, makes its train handler raise, hang, exit its process, or scale its update (a poisoning
attacker). Everything else is fedcare's real client and server. Usage::

    python -m simulations.fault_injection --fault hang --hospital 1 --rounds 2 --seconds 30 \\
        --out runs/drill --set num-server-rounds=3 round-timeout=10

Prints the run directory's last metrics row; exits non-zero if the federation failed.
"""

import argparse
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message

from common import record_keys as keys

FAULTS = ("raise", "hang", "exit", "scale")
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Fault:
    """What goes wrong, at which hospital (partition id) and in which rounds (empty: all)."""

    kind: str
    hospital: int
    rounds: tuple[int, ...] = ()
    seconds: float = 60.0  # hang: how long the handler sleeps
    factor: float = 20.0  # scale: the factor applied to the update the hospital sends

    def applies(self, msg: Message, context: Context) -> bool:
        """Whether this train message reaches the faulty hospital in a faulty round."""
        if not msg.metadata.message_type.startswith("train"):
            return False
        if int(context.node_config.get("partition-id", -1)) != self.hospital:
            return False
        server_round = int(msg.content[keys.CONFIG][keys.SERVER_ROUND])
        return not self.rounds or server_round in self.rounds


def fault_mod(fault: Fault) -> Callable[[Message, Context, Callable], Message]:
    """A Flower mod that injects `fault` around the wrapped handler."""

    def mod(msg: Message, context: Context, call_next: Callable) -> Message:
        if not fault.applies(msg, context):
            return call_next(msg, context)
        if fault.kind == "raise":
            raise RuntimeError(f"injected fault at hospital {fault.hospital}")
        if fault.kind == "hang":
            time.sleep(fault.seconds)
        elif fault.kind == "exit":
            os._exit(17)  # the hospital's process dies mid-round, no reply, no cleanup
        reply = call_next(msg, context)
        if fault.kind == "scale" and not reply.has_error() and keys.ARRAYS in reply.content:
            scaled = [a * fault.factor for a in reply.content[keys.ARRAYS].to_numpy_ndarrays()]
            reply.content[keys.ARRAYS] = ArrayRecord(scaled)
        return reply

    return mod


def main(argv: list[str] | None = None) -> int:
    """Run one drill; return the exit status (0: the federation finished)."""
    from client.app import build_client_app
    from common.config import RunConfig
    from server.run_directory import prepare_run_dir
    from simulations.privacy_sweep import parse_overrides
    from simulations.simulate import SimulatedHospitalPrivacy, simulate

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", choices=FAULTS, required=True)
    parser.add_argument("--hospital", type=int, default=0, help="partition id of the faulty one")
    parser.add_argument("--rounds", type=int, nargs="*", default=[], help="faulty rounds (all)")
    parser.add_argument("--seconds", type=float, default=60.0, help="hang: seconds")
    parser.add_argument("--factor", type=float, default=20.0, help="scale: factor")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", nargs="*", default=[], help="run-config KEY=VALUE")
    args = parser.parse_args(argv)
    fault = Fault(args.fault, args.hospital, tuple(args.rounds), args.seconds, args.factor)
    config = RunConfig.from_run_config({**parse_overrides(args.set), "out-dir": str(args.out)})
    run_dir = prepare_run_dir(args.out, task=config.task, force=False)
    app = build_client_app(SimulatedHospitalPrivacy(config, run_dir / "ledgers"),
                           mods=[fault_mod(fault)])
    simulate(config, run_dir, client_app=app)
    print((run_dir / "metrics.csv").read_text().splitlines()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
