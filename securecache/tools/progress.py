"""A one-line progress report on a terminal (items, items/s, ETA); silent
when stderr is not a terminal, so scripts and logs stay clean."""

from __future__ import annotations

import sys
import time

EVERY = 4096          # look at the clock once per this many items
INTERVAL = 0.25       # seconds between redraws


class Progress:
    """``step(n)`` as items are done, ``done()`` at the end."""

    def __init__(self, what: str, total: int | None = None, stream=None,
                 enabled: bool | None = None) -> None:
        self.what = what
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.count = 0
        self._pending = 0
        self.start = time.monotonic()
        self._drawn = 0.0

    def step(self, n: int = 1) -> None:
        """Count ``n`` more items; redraw now and then."""
        self.count += n
        self._pending += n
        if self.enabled and self._pending >= EVERY:
            self._pending = 0
            now = time.monotonic()
            if now - self._drawn >= INTERVAL:
                self._drawn = now
                self._draw(now)

    def rate(self) -> float:
        """Items per second so far."""
        elapsed = time.monotonic() - self.start
        return self.count / elapsed if elapsed > 0 else 0.0

    def _draw(self, now: float, end: str = "") -> None:
        rate = self.rate()
        line = f"{self.what}: {self.count:,}"
        if self.total:
            line += f"/{self.total:,}"
        line += f" items  {rate:,.0f} items/s"
        if self.total and rate and not end:
            line += f"  ETA {max(self.total - self.count, 0) / rate:,.0f} s"
        self.stream.write("\r" + line.ljust(70) + end)
        self.stream.flush()

    def done(self) -> None:
        """Draw the final line (on a terminal)."""
        if self.enabled:
            self._draw(time.monotonic(), "\n")
