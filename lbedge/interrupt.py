"""SIGINT and SIGTERM as one clean way out: both raise :class:`KeyboardInterrupt` in the main thread, so the same
``finally`` blocks stop pipelines and finish output files, and the exit status says which signal it was."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

#: exit statuses of a run ended by a signal, as shells report them (128 + signal number)
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager or ``kill`` stopping the program), raised like Ctrl-C's KeyboardInterrupt."""

    signal_name = "SIGTERM"


def signal_name(exc: BaseException) -> str:
    """``"SIGTERM"`` for :class:`Terminated`, ``"SIGINT"`` for any other KeyboardInterrupt."""
    return getattr(exc, "signal_name", "SIGINT")


def exit_status(exc: BaseException) -> int:
    """130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (a no-op in other threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
