"""Cost of the wire format: pack + unpack of a round's settings and a reply, at d parameters.

Usage: ``python -m benchmarks.wire [--parameters 10000] [--repeats 2000]``.
Prints the median microseconds of each step (target: settings + reply under 1 ms at 10^4).
"""

import argparse
import statistics
import time

import numpy as np


def _median_us(step, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    from common.config import RunConfig
    from common.metrics import evaluation_statistics
    from common.wire.records import pack_reply, pack_request, unpack_reply, unpack_request
    from common.wire.replies import HospitalIdentity, PrivacyReport, RoundRef, TrainReply
    from common.wire.statistics import StatisticsSpec
    from server.federation import round_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parameters", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args(argv)
    d = args.parameters
    weights = [np.zeros((d - 10, 1), np.float32), np.zeros(10, np.float32)]
    settings = round_settings(RunConfig.from_run_config({}), "0" * 32, 1)
    rng = np.random.default_rng(0)
    stats = evaluation_statistics("binary", rng.integers(0, 2, 100), rng.random(100))
    reply = TrainReply(HospitalIdentity("cleveland", 0), RoundRef("0" * 32, 1),
                       update=[w + 0.1 for w in weights],
                       privacy=PrivacyReport(0.5, float("inf"), 1.0, 1e-5), statistics=stats)
    spec = StatisticsSpec("binary", 1)
    request_content = pack_request(settings, weights)
    reply_content = pack_reply(reply)
    bare = TrainReply(reply.hospital, reply.answers, update=reply.update, privacy=reply.privacy)
    bare_content = pack_reply(bare)
    rows = [
        ("pack settings + weights",
         _median_us(lambda: pack_request(settings, weights), args.repeats)),
        ("unpack settings + weights", _median_us(lambda: unpack_request(request_content),
                                                 args.repeats)),
        ("pack reply", _median_us(lambda: pack_reply(reply), args.repeats)),
        ("unpack reply", _median_us(lambda: unpack_reply(reply_content, statistics=spec),
                                    args.repeats)),
    ]
    bare_rows = [
        ("pack reply, no statistics", _median_us(lambda: pack_reply(bare), args.repeats)),
        ("unpack reply, no statistics", _median_us(
            lambda: unpack_reply(bare_content, statistics=spec), args.repeats)),
    ]
    print(f"wire format, {d} parameters, median of {args.repeats}")
    print(f"{'step':<32} {'us':>10}")
    for name, micros in rows + bare_rows:
        print(f"{name:<32} {micros:>10.1f}")
    request = rows[0][1] + rows[1][1]
    print(f"{'settings + reply with statistics':<32} {request + rows[2][1] + rows[3][1]:>10.1f}")
    print(f"{'settings + reply, no statistics':<32} "
          f"{request + bare_rows[0][1] + bare_rows[1][1]:>10.1f}")


if __name__ == "__main__":
    main()
