"""Processing time per packet, as a histogram cheap enough to keep on the data path."""

from __future__ import annotations

import math

#: buckets per doubling of the time: each is about 19% wide
STEPS_PER_OCTAVE = 4
BUCKETS = 96  # up to 2**(95/4) µs, about 14 s
_log2 = math.log2


class ProcessingTimes:
    """How long pyslirp spent on each packet, in microseconds (p50/p99 for the stats)."""

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.packets = 0

    def add(self, seconds: float, packets: int) -> None:
        """``packets`` were handled in ``seconds`` together: each gets the mean."""
        if packets <= 0:
            return
        us = seconds * 1e6 / packets
        if us < 1.0:
            index = 0
        else:  # called after every read and flush: no min(), no module attribute lookups
            index = int(_log2(us) * STEPS_PER_OCTAVE) + 1
            if index >= BUCKETS:
                index = BUCKETS - 1
        self.counts[index] += packets
        self.packets += packets

    def percentile(self, fraction: float) -> float | None:
        """The upper edge of the bucket holding that fraction of the packets, in µs."""
        if not self.packets:
            return None
        rank = fraction * self.packets
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return round(2 ** (index / STEPS_PER_OCTAVE), 1)
        return None

    def stats(self) -> dict[str, float | int | None]:
        return {"packets": self.packets, "p50_us": self.percentile(0.5), "p99_us": self.percentile(0.99)}
