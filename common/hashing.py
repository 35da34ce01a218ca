"""A hash every process agrees on (``hash()`` is salted per process): router replicas must place a key alike."""

from __future__ import annotations

import hashlib


def stable_hash(text: str) -> int:
    """64 bits of BLAKE2b of the text."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
