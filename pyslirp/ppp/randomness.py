"""Where the PPP protocols' random values come from: LCP's Magic-Number (RFC 1661 §6.4), CHAP's
challenges and identifiers (RFC 1994 §2.3, §4.1). The source is injected: a test gives a seeded
``random.Random``, the server :class:`OSRandom`, which reads the OS's generator and does not
import :mod:`random` (on a small board that module costs the server about 190 KB)."""

from __future__ import annotations

import os
from typing import Protocol


class RandomSource(Protocol):
    """What the protocols draw: ``random.Random`` has both."""

    def getrandbits(self, k: int) -> int: ...

    def randbytes(self, n: int) -> bytes: ...


class OSRandom:
    """Random values from ``os.urandom``, unpredictable to the peer as RFC 1994 §2.3 asks."""

    def getrandbits(self, k: int) -> int:
        """A non-negative int of ``k`` random bits."""
        return int.from_bytes(os.urandom((k + 7) // 8), "big") >> (-k % 8)

    def randbytes(self, n: int) -> bytes:
        return os.urandom(n)
