"""Progress of long work (export, quantization, engine builds, evaluation, label embedding) as log records of the
``lbedge.progress`` logger, so that long commands are never silent.

The library calls :func:`stage` when a step of long work starts and :class:`Counter` while it goes through many
items; the CLI shows these records on stderr (``-q`` hides them); a library user sees them by attaching a handler
to ``logging.getLogger("lbedge.progress")`` (they are INFO records).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("lbedge.progress")


def stage(message: str, *args: object) -> None:
    """Announce a step of long work (``stage("exporting the %s tower", "vision")``)."""
    log.info(message, *args)


class Counter:
    """Reports ``what: done/total`` at most every ``every_s`` seconds (and at the end) while items are processed."""

    def __init__(self, what: str, total: int, every_s: float = 2.0):
        self.what, self.total, self.every_s = what, int(total), float(every_s)
        self.done = 0
        self._last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.done >= self.total or now - self._last >= self.every_s:
            self._last = now
            log.info("%s: %d/%d", self.what, min(self.done, self.total), self.total)
