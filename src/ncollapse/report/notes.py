"""Report notes: what a page left out or degraded, said on the page and once as a log line, never as a warning.

Notes go to the ``ncollapse.report.notes`` logger at WARNING level, each line starting with ``report note:``, so
``ncollapse experiment`` (whose log lines are plain messages) and a script without logging set-up print them
as one line each. ``collected()`` gathers them instead, for a command that prints or returns them itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PREFIX", "say", "collected"]

log = logging.getLogger(__name__)
PREFIX = "report note: "


def say(text: str) -> None:
    """Log one report note."""
    log.warning("%s%s", PREFIX, text)


class _Collector(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.into.append(message[len(PREFIX):] if message.startswith(PREFIX) else message)


@contextmanager
def collected() -> Iterator[list[str]]:
    """Inside the block, report notes are appended (without the prefix, in order) to the yielded list and not
    passed on to other handlers."""
    notes: list[str] = []
    handler = _Collector(notes)
    propagate = log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield notes
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
