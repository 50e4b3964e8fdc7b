"""Shared unit-test pieces: a clock the test moves by hand."""

from __future__ import annotations

import pytest


class Clock:
    """A monotonic clock for stores and probes; tests set `now` themselves."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
