"""A consortium of hospitals (roster, signing keys, settings) and a round driver for the tests.

The driver moves the real client and server state machines' messages, letting a test alter any
request or reply in flight (a deviating server, or a misbehaving hospital) or drop hospitals.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from common.secagg.protocol import (
    SecAggClient,
    SecAggServer,
    SecAggSettings,
    Stage,
    build_roster,
    load_signing_key,
    make_signing_key,
)

LENGTH = 64
RUN_ID = "run-7"


class Consortium:
    """n hospitals with fresh Ed25519 keys on one roster, and the run's settings."""

    def __init__(self, n, *, c=1, threshold=None, min_threshold=None, honest=None,
                 run_id=RUN_ID, prefix="hospital"):
        self.names = [f"{prefix}-{chr(ord('a') + i)}" for i in range(n)]
        pairs = [make_signing_key() for _ in self.names]
        self.signing_keys = {
            name: load_signing_key(pair.private_pem)
            for name, pair in zip(self.names, pairs, strict=True)
        }
        threshold = threshold if threshold is not None else (n + c) // 2 + 1
        self.roster = build_roster(
            self.names, [pair.public_key for pair in pairs], c,
            min_threshold if min_threshold is not None else min(threshold, max(2, c + 1)),
            honest,
        )
        self.run_id = run_id
        self.settings = SecAggSettings(
            clip_norm=1.0, noise_multiplier=1.1, honest=threshold - c, threshold=threshold,
            encoding_scale=2.0**20, planned_rounds=10,
        )

    def client(self, name, **kwargs):
        return SecAggClient(name, roster=self.roster, signing_key=self.signing_keys[name],
                            run_id=self.run_id, **kwargs)

    def clients(self):
        return {name: self.client(name) for name in self.names}

    def server(self, *, round_number=1, hospitals=None, vector_length=LENGTH, settings=None,
               **kwargs):
        return SecAggServer(
            run_id=self.run_id, round_number=round_number, roster=self.roster,
            settings=settings or self.settings, hospitals=hospitals or self.names,
            vector_length=vector_length, **kwargs,
        )

    def with_settings(self, **changes):
        return replace(self.settings, **changes)


def random_updates(names, rng, length=LENGTH):
    return {
        name: rng.integers(-(2**40), 2**40, size=length).astype(np.int64).view(np.uint64)
        for name in names
    }


def plain_sum(updates, names):
    total = np.zeros(next(iter(updates.values())).shape, dtype=np.uint64)
    for name in names:
        total += updates[name]
    return total


def run_round(server, clients, updates, *, settings, drop=None, tamper=None):
    """Drive a round to its end; return (result, transcript).

    ``settings`` is a SecAggSettings or a dict name -> SecAggSettings (what each hospital
    accepted). ``drop`` maps a stage to hospitals that stop answering from it on.
    ``tamper(direction, stage, name, payload)`` may alter a request (to ``name``) or a reply.
    """
    drop, gone, transcript = drop or {}, set(), {}
    result = None
    while server.stage is not None:
        stage = server.stage
        gone |= set(drop.get(stage, ()))
        for name, request in server.requests().items():
            if name in gone:
                continue
            if tamper is not None:
                request = tamper("request", stage, name, request)
            own = settings[name] if isinstance(settings, dict) else settings
            quantized = updates[name] if stage == Stage.MASKED_INPUT else None
            reply = clients[name].handle(request, quantized=quantized, settings=own)
            if tamper is not None:
                reply = tamper("reply", stage, name, reply)
            transcript[(stage, name)] = reply
            try:
                server.receive(name, reply)
            except Exception:  # the server excludes it; the round goes on
                transcript[("rejected", stage, name)] = True
        result = server.close_stage()
    return result, transcript
