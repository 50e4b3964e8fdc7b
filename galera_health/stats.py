"""One node's poll counters: written by that node's poll job, read by /metrics at scrape time.

They sit beside the store, between the two sides: the poller writes them and the HTTP side
reads them, and neither side imports the other (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from .verdict import ProbeKind, State

# A poll is a few ms when all is well and ends at a deadline (2-4 s by default) when not.
POLL_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True)
class PollCounts:
    """A consistent copy of one node's PollStats, taken at scrape time."""

    buckets: tuple[int, ...]  # per POLL_BUCKETS bound, not cumulative
    duration_sum: float
    polls: int
    errors: Mapping[ProbeKind, int]
    transitions: Mapping[tuple[State, State], int]
    skipped: int


class PollStats:
    """One node's poll counters. Written by that node's poller job only; read by scrapes.
    The lock is held for a few additions or a copy, never across I/O."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets = [0] * len(POLL_BUCKETS)
        self._sum = 0.0
        self._polls = 0
        self._errors: Counter[ProbeKind] = Counter()
        self._transitions: Counter[tuple[State, State]] = Counter()
        self._skipped = 0

    def record(
        self,
        seconds: float,
        error_kind: ProbeKind | None,
        transition: tuple[State, State] | None,
    ) -> None:
        with self._lock:
            self._polls += 1
            self._sum += seconds
            for index, bound in enumerate(POLL_BUCKETS):
                if seconds <= bound:
                    self._buckets[index] += 1
                    break
            if error_kind is not None:
                self._errors[error_kind] += 1
            if transition is not None:
                self._transitions[transition] += 1

    def note_skipped(self) -> None:
        with self._lock:
            self._skipped += 1

    def counts(self) -> PollCounts:
        with self._lock:
            return PollCounts(
                buckets=tuple(self._buckets),
                duration_sum=self._sum,
                polls=self._polls,
                errors=dict(self._errors),
                transitions=dict(self._transitions),
                skipped=self._skipped,
            )
