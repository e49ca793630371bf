"""Benchmark: client and server compute time of one secure-aggregation round, in-process.

Runs the pure state machines (no Flower, no network) for n hospitals and d parameters, with
t = floor(n/2) + 1, and prints per round: the mean and max client crypto time (all four stages,
quantisation excluded and shown apart), the server time with no dropout, and the server time
when one hospital drops after sharing keys (its mask key is rebuilt and its masks removed).
Usage: ``python -m simulations.benchmark_secagg_crypto [--sizes 4 10 30] [--params 10000 1000000]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np

from common.secagg.protocol import SecAggClient, SecAggServer, Stage
from common.secagg.quantization import choose_scale, quantize

CLIP_BOUND = 1.0
TARGET_SECONDS = 0.050  # client crypto for d = 10**4 at n = 10


@dataclass(frozen=True, slots=True)
class RoundTiming:
    """Seconds spent in one round."""

    client_mean: float
    client_max: float
    quantize: float
    server: float


def time_round(
    num_hospitals: int, num_params: int, *, drop_one: bool, seed: int = 0
) -> RoundTiming:
    """Run one round and time each side's calls (seconds, wall clock, one core)."""
    rng = np.random.default_rng(seed)
    ids = list(range(1, num_hospitals + 1))
    threshold = num_hospitals // 2 + 1
    scale = choose_scale(CLIP_BOUND, num_hospitals)
    updates = {node: rng.normal(0.0, 0.1, size=num_params) for node in ids}
    start = time.perf_counter()
    quantized = {
        node: quantize(updates[node], clip_bound=CLIP_BOUND, scale=scale, rng=rng).values
        for node in ids
    }
    quantize_seconds = (time.perf_counter() - start) / num_hospitals
    clients = {node: SecAggClient(node) for node in ids}
    client_seconds = dict.fromkeys(ids, 0.0)
    server_seconds = 0.0
    server = SecAggServer(
        round_number=1, node_ids=ids, threshold=threshold, vector_length=num_params
    )
    dropped = {ids[-1]} if drop_one else set()
    while server.stage is not None:
        stage = server.stage
        start = time.perf_counter()
        requests = server.requests()
        server_seconds += time.perf_counter() - start
        for node, request in requests.items():
            if stage in (Stage.MASKED_INPUT, Stage.UNMASK) and node in dropped:
                continue
            start = time.perf_counter()
            reply = clients[node].handle(request, quantized=quantized[node])
            client_seconds[node] += time.perf_counter() - start
            start = time.perf_counter()
            server.receive(node, reply)
            server_seconds += time.perf_counter() - start
        start = time.perf_counter()
        server.close_stage()
        server_seconds += time.perf_counter() - start
    per_client = [client_seconds[node] for node in ids if node not in dropped]
    return RoundTiming(
        client_mean=statistics.fmean(per_client),
        client_max=max(per_client),
        quantize=quantize_seconds,
        server=server_seconds,
    )


def main() -> None:
    """Print one row per (n, d): milliseconds per round, the median of ``--repeats`` runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 10, 30])
    parser.add_argument("--params", type=int, nargs="+", default=[10**4, 10**6])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    header = (
        f"{'n':>3} {'d':>9} {'t':>3} | {'client mean':>11} {'client max':>10} "
        f"{'quantize':>9} | {'server':>9} {'server, 1 drop':>14}   (ms per round)"
    )
    print(header)
    print("-" * len(header))
    target_row = None
    for num_params in args.params:
        for n in args.sizes:
            runs = [time_round(n, num_params, drop_one=False, seed=r) for r in range(args.repeats)]
            drops = [time_round(n, num_params, drop_one=True, seed=r) for r in range(args.repeats)]

            def median_ms(values: list[float]) -> float:
                return 1000 * statistics.median(values)

            client_mean = median_ms([run.client_mean for run in runs])
            print(
                f"{n:>3} {num_params:>9} {n // 2 + 1:>3} | {client_mean:>11.1f} "
                f"{median_ms([run.client_max for run in runs]):>10.1f} "
                f"{median_ms([run.quantize for run in runs]):>9.1f} | "
                f"{median_ms([run.server for run in runs]):>9.1f} "
                f"{median_ms([run.server for run in drops]):>14.1f}"
            )
            if n == 10 and num_params == 10**4:
                target_row = client_mean
    if target_row is not None:
        verdict = "met" if target_row < 1000 * TARGET_SECONDS else "MISSED"
        print(
            f"\ntarget: client crypto < {1000 * TARGET_SECONDS:.0f} ms at n=10, d=10^4: "
            f"{target_row:.1f} ms ({verdict})"
        )


if __name__ == "__main__":
    main()
