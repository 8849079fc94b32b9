"""Progress lines of long work: one callback type, one way to say how far along and how long is left.

Library code takes a :data:`Progress` callback (a logger's ``info`` by default); jobs pass ``print``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = [
    "Meter",
    "Progress",
]

Progress = Callable[[str], None]
"""Receives one line per step of long work."""


class Meter:
    """Elapsed time and an ETA for ``total`` units of work, started when the meter is made."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.t0 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since the meter started."""
        return time.perf_counter() - self.t0

    def eta(self, done: float) -> float:
        """Seconds left at the average rate so far (NaN before anything is done)."""
        return self.elapsed / done * (self.total - done) if done else math.nan

    def times(self, done: float) -> str:
        """``"<elapsed>s  eta <seconds>s"``, the end of every progress line."""
        return f"{self.elapsed:.0f}s  eta {self.eta(done):.0f}s"
