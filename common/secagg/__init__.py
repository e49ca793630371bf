"""Secure aggregation (Bonawitz et al., CCS 2017) as pure functions and state machines.

The server learns only the sum of the hospitals' quantised updates, even if it deviates: a
pinned roster of Ed25519 keys signs every round key and the survivor set, X25519 + HKDF-SHA256
pairwise keys, ChaCha20 masks mod 2**64, Shamir-shared seeds for dropout recovery and
ChaCha20-Poly1305 for routed shares (Section 4, active adversary). No Flower import lives here.
"""
