r"""Fault drills: run a simulation in which one hospital misbehaves, to see the federation cope.

A Flower mod wraps the hospital ClientApp of one hospital (by partition id) and, in the chosen
rounds, makes its train handler raise, hang, exit its process, scale its update (a poisoning
attacker), decline, or send a malformed reply — a different one each round, in turn (see
``MALFORMATIONS``: bad counts, strings for numbers, a broken or stolen identity, a replayed
reply, a claimed noise level with a huge update, bad statistics). Everything else is fedcare's
real client and server. Usage::

    python -m simulations.drills.fault_injection --fault hang --hospital 1 --rounds 2 --seconds 30 \
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

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from common.wire.records import ARRAYS, METRICS, REPLY, STATISTICS, pack_reply, unpack_request
from common.wire.replies import DeclinedReply, HospitalIdentity, RoundRef

FAULTS = ("raise", "hang", "exit", "scale", "decline", "malformed")
PROCESS_FAULTS = ("hang", "exit")  # faults of the hospital's process: run on Ray's engine
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
        """Whether this message reaches the faulty hospital in a faulty round.

        Train messages for every fault; evaluate messages too for ``malformed``.
        """
        kind = msg.metadata.message_type
        if not (kind.startswith("train") or (self.kind == "malformed" and kind == "evaluate")):
            return False
        if int(context.node_config.get("partition-id", -1)) != self.hospital:
            return False
        return not self.rounds or _round_of(msg) in self.rounds


def _round_of(msg: Message) -> int:
    settings = unpack_request(msg.content).settings
    return settings.server_round if settings is not None else 0


def _set(content: RecordDict, record: str, **fields: object) -> RecordDict:
    """`content` with fields of one record replaced (a ConfigRecord if the values need it)."""
    values = {**(dict(content[record]) if record in content else {}), **fields}
    try:
        content[record] = MetricRecord(values) if record == METRICS else ConfigRecord(values)
    except (TypeError, ValueError):
        content[record] = ConfigRecord(values)
    return content


def _stolen_identity(content: RecordDict, _: RecordDict | None) -> RecordDict:
    """Claim the next hospital's name and index (names as in the run's task)."""
    from common.tasks import get_task

    header = dict(content[REPLY])
    index = int(header["index"]) + 1
    names = get_task("heart-disease").hospital_names(4)
    return _set(content, REPLY, index=index % 4, name=names[index % 4])


def _huge_update(content: RecordDict, _: RecordDict | None) -> RecordDict:
    if ARRAYS in content:
        content[ARRAYS] = ArrayRecord([a * 1000 for a in content[ARRAYS].to_numpy_ndarrays()])
    return _set(content, METRICS, **{"noise-stddev": 1e9})


def _drop_statistic(content: RecordDict, _: RecordDict | None) -> RecordDict:
    """Statistics one value short (a train reply gets such statistics added)."""
    flat = (content[STATISTICS]["sums"].numpy()[1:] if STATISTICS in content
            else np.ones(3))
    content[STATISTICS] = ArrayRecord({"sums": Array(flat)})
    return content


def _replay(content: RecordDict, previous: RecordDict | None) -> RecordDict:
    return previous if previous is not None else content


Malformation = Callable[[RecordDict, RecordDict | None], RecordDict]
# Each round the malformed hospital sends the next of these (a hostile or buggy hospital).
MALFORMATIONS: tuple[tuple[str, Malformation], ...] = (
    ("negative examples", lambda c, _: _set(c, METRICS, **{"num-examples": -5})),
    ("NaN examples", lambda c, _: _set(c, METRICS, **{"num-examples": float("nan")})),
    ("metrics as strings", lambda c, _: _set(c, METRICS, **{"num-examples": "many"})),
    ("index not a number", lambda c, _: _set(c, REPLY, index="zero")),
    ("identity missing", lambda c, _: RecordDict({k: v for k, v in c.items() if k != REPLY})),
    ("10^12 examples", lambda c, _: _set(c, METRICS, **{"num-examples": 10**12})),
    ("another's identity", _stolen_identity),
    ("replayed reply", _replay),
    ("claimed noise 1e9, update x1000", _huge_update),
    ("statistic missing", _drop_statistic),
)


def faulty_client_app(privacy_for: Callable, fault: Fault) -> ClientApp:
    """Fedcare's ClientApp with `fault` injected (a ``RecipeClientApp`` recipe)."""
    from client.app import build_client_app

    return build_client_app(privacy_for, mods=[fault_mod(fault)])


def fault_mod(fault: Fault) -> Callable[[Message, Context, Callable], Message]:
    """A Flower mod that injects `fault` around the wrapped handler."""

    def mod(msg: Message, context: Context, call_next: Callable) -> Message:
        if not fault.applies(msg, context):
            return call_next(msg, context)
        if fault.kind == "decline":
            settings = unpack_request(msg.content).settings
            reply = DeclinedReply(HospitalIdentity(*_honest_identity(call_next(msg, context))),
                                  RoundRef(settings.run_id, settings.server_round)
                                  if settings else RoundRef("unknown", 1), "drill: declines")
            return Message(content=pack_reply(reply), reply_to=msg)
        if fault.kind == "malformed":
            reply = call_next(msg, context)
            if reply.has_error():
                return reply
            kind = msg.metadata.message_type
            name, malform = MALFORMATIONS[(_round_of(msg) - 1) % len(MALFORMATIONS)]
            honest = reply.content
            bad = malform(RecordDict(dict(honest)), _previous(context, kind))
            _remember(context, kind, honest)
            logger.warning("drill: hospital %d sends a malformed %s reply (%s)", fault.hospital,
                           kind, name)
            return Message(content=bad, reply_to=msg)
        if fault.kind == "raise":
            raise RuntimeError(f"injected fault at hospital {fault.hospital}")
        if fault.kind == "hang":
            time.sleep(fault.seconds)
        elif fault.kind == "exit":
            os._exit(17)  # the hospital's process dies mid-round, no reply, no cleanup
        reply = call_next(msg, context)
        if fault.kind == "scale" and not reply.has_error() and ARRAYS in reply.content:
            scaled = [a * fault.factor for a in reply.content[ARRAYS].to_numpy_ndarrays()]
            reply.content[ARRAYS] = ArrayRecord(scaled)
        return reply

    return mod


STATE_PREFIX = "drill-previous"


def _remember(context: Context, kind: str, content: RecordDict) -> None:
    """Keep this node's last honest reply of `kind` in its Context (it outlives the process that
    handled it: Ray may serve the node from another worker next round).
    """
    for name in [k for k in context.state if k.startswith(f"{STATE_PREFIX}/{kind}/")]:
        del context.state[name]
    for name, record in content.items():
        context.state[f"{STATE_PREFIX}/{kind}/{name}"] = record


def _previous(context: Context, kind: str) -> RecordDict | None:
    prefix = f"{STATE_PREFIX}/{kind}/"
    records = {k[len(prefix):]: v for k, v in context.state.items() if k.startswith(prefix)}
    return RecordDict(records) if records else None


def _honest_identity(reply: Message) -> tuple[str, int]:
    header = dict(reply.content[REPLY])
    return str(header["name"]), int(header["index"])  # type: ignore[call-overload]


def main(argv: list[str] | None = None) -> int:
    """Run one drill; return the exit status (0: the federation finished)."""
    from common.config import RunConfig
    from server.run_directory import prepare_run_dir
    from simulations.engine.app_recipe import RecipeClientApp
    from simulations.engine.in_process_engine import Engine
    from simulations.engine.simulate import (
        SimulatedHospitalPrivacy,
        simulate,
        with_ephemeral_roster,
    )
    from simulations.studies.privacy_sweep import parse_overrides

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
    # As simulate() does for its own app: the hospitals prove who they are with roster keys.
    config = with_ephemeral_roster(config, run_dir)
    app = RecipeClientApp(faulty_client_app, SimulatedHospitalPrivacy(config, run_dir / "ledgers"),
                          fault)
    # A hospital that hangs or exits needs a process of its own (Ray's engine cuts it off at the
    # deadline, or loses the worker); the other faults run wherever simulate() runs them.
    engine = Engine.RAY if fault.kind in PROCESS_FAULTS else Engine.AUTO
    simulate(config, run_dir, client_app=app, engine=engine)
    print((run_dir / "metrics.csv").read_text().splitlines()[-1])
    return 0


if __name__ == "__main__":
    # Run the module under its import name: the drill's Fault and app builder are pickled to
    # the hospitals' Ray workers by name, and their ``__main__`` is not this script.
    from simulations.drills.fault_injection import main as drill

    raise SystemExit(drill())
