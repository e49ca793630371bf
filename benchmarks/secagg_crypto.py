"""Benchmark: client and server compute time of one secure-aggregation round, in-process.

Runs the pure state machines (no Flower, no network) for n hospitals on a roster with c
colluders and d parameters, with t = floor((n + c)/2) + 1, and prints per round: the mean and
max client crypto time (all five stages, Ed25519 signing and verification included;
quantisation excluded and shown apart), the part of it spent on signatures (2 signs, n - 1 + t
verifications per hospital, timed apart), the server time with no dropout (it verifies every
signature too), and the server time when one hospital drops after sharing keys.
Usage: ``python -m benchmarks.secagg_crypto [--sizes 4 10 30] [--params 10000 1000000]
[--colluders 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np

from common.secagg import signatures as sig
from common.secagg.protocol import (
    SecAggClient,
    SecAggServer,
    SecAggSettings,
    Stage,
    build_roster,
    load_signing_key,
    make_signing_key,
)
from common.secagg.quantization import choose_scale, quantize

CLIP_BOUND = 1.0
TARGET_SECONDS = 0.020  # client crypto for d = 10**4 at n = 10, signatures included


@dataclass(frozen=True, slots=True)
class RoundTiming:
    """Seconds spent in one round."""

    client_mean: float
    client_max: float
    quantize: float
    server: float


def threshold_for(num_hospitals: int, colluders: int) -> int:
    """The smallest threshold the active-adversary rule allows: floor((n + c)/2) + 1."""
    return (num_hospitals + colluders) // 2 + 1


def signature_seconds(num_hospitals: int, threshold: int, repeats: int = 200) -> float:
    """Seconds one hospital spends per round on Ed25519: 2 signs, n - 1 + t verifications."""
    key = load_signing_key(make_signing_key().private_pem)
    message = bytes(300)
    signature = key.sign(message)
    start = time.perf_counter()
    for _ in range(repeats):
        sig.sign(key, message)
    per_sign = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        sig.verify(key.public_key(), signature, message)
    per_verify = (time.perf_counter() - start) / repeats
    return 2 * per_sign + (num_hospitals - 1 + threshold) * per_verify


def time_round(
    num_hospitals: int, num_params: int, *, drop_one: bool, seed: int = 0, colluders: int = 1
) -> RoundTiming:
    """Run one round and time each side's calls (seconds, wall clock, one core)."""
    rng = np.random.default_rng(seed)
    ids = [f"hospital-{i:02d}" for i in range(1, num_hospitals + 1)]
    threshold = threshold_for(num_hospitals, colluders)
    keys = {node: make_signing_key() for node in ids}
    roster = build_roster(ids, [keys[node].public_key for node in ids], colluders, threshold)
    scale = choose_scale(CLIP_BOUND, num_hospitals)
    settings = SecAggSettings(clip_norm=CLIP_BOUND, noise_multiplier=1.0,
                              honest=threshold - colluders, threshold=threshold,
                              encoding_scale=scale, planned_rounds=1)
    updates = {node: rng.normal(0.0, 0.1, size=num_params) for node in ids}
    start = time.perf_counter()
    quantized = {
        node: quantize(updates[node], clip_bound=CLIP_BOUND, scale=scale, rng=rng).values
        for node in ids
    }
    quantize_seconds = (time.perf_counter() - start) / num_hospitals
    clients = {
        node: SecAggClient(node, roster=roster, run_id="benchmark",
                           signing_key=load_signing_key(keys[node].private_pem))
        for node in ids
    }
    client_seconds = dict.fromkeys(ids, 0.0)
    server_seconds = 0.0
    start = time.perf_counter()
    server = SecAggServer(run_id="benchmark", round_number=1, roster=roster, settings=settings,
                          hospitals=ids, vector_length=num_params)
    server_seconds += time.perf_counter() - start
    dropped = {ids[-1]} if drop_one else set()
    while server.stage is not None:
        stage = server.stage
        start = time.perf_counter()
        requests = server.requests()
        server_seconds += time.perf_counter() - start
        for node, request in requests.items():
            if stage != Stage.ADVERTISE_KEYS and stage != Stage.SHARE_KEYS and node in dropped:
                continue
            start = time.perf_counter()
            reply = clients[node].handle(request, quantized=quantized[node], settings=settings)
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
    parser.add_argument("--colluders", type=int, default=1, help="the roster's c")
    args = parser.parse_args()
    c = args.colluders

    header = (
        f"{'n':>3} {'d':>9} {'t':>3} | {'client mean':>11} {'client max':>10} "
        f"{'signatures':>10} {'quantize':>9} | {'server':>9} {'server, 1 drop':>14}"
        "   (ms per round)"
    )
    print(header)
    print("-" * len(header))
    target_row = None
    for num_params in args.params:
        for n in args.sizes:
            runs = [time_round(n, num_params, drop_one=False, seed=r, colluders=c)
                    for r in range(args.repeats)]
            drops = [time_round(n, num_params, drop_one=True, seed=r, colluders=c)
                     for r in range(args.repeats)]
            t = threshold_for(n, c)

            def median_ms(values: list[float]) -> float:
                return 1000 * statistics.median(values)

            client_mean = median_ms([run.client_mean for run in runs])
            print(
                f"{n:>3} {num_params:>9} {t:>3} | {client_mean:>11.1f} "
                f"{median_ms([run.client_max for run in runs]):>10.1f} "
                f"{1000 * signature_seconds(n, t):>10.2f} "
                f"{median_ms([run.quantize for run in runs]):>9.1f} | "
                f"{median_ms([run.server for run in runs]):>9.1f} "
                f"{median_ms([run.server for run in drops]):>14.1f}"
            )
            if n == 10 and num_params == 10**4:
                target_row = client_mean, median_ms([run.client_max for run in runs])
    if target_row is not None:
        mean, worst = target_row
        verdict = "met" if worst < 1000 * TARGET_SECONDS else "MISSED"
        print(
            f"\ntarget: client crypto < {1000 * TARGET_SECONDS:.0f} ms at n=10, d=10^4, "
            f"signatures included: mean {mean:.1f} ms, slowest hospital {worst:.1f} ms ({verdict})"
        )


if __name__ == "__main__":
    main()
