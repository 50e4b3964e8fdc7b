"""The lease job (poller.LeaseRunner): one lease poll per period, again at the next tick after a
statement timed out, when a still lease becomes takeable, nothing before the node's first
verdict; with scripted lease clients."""

from __future__ import annotations

import logging
from typing import Any

from galera_health.lease import (
    STANDBY,
    WRITER,
    Acquire,
    Failure,
    Identity,
    LeaseRow,
    LeaseState,
    Read,
    Release,
    Renew,
    Step,
    role_text,
)
from galera_health.logs import RepeatFilter
from galera_health.poller import LeaseRunner
from galera_health.store import VerdictStore
from galera_health.verdict import Snapshot

from ..samples import SYNCED
from .conftest import Clock
from .test_web import put


class ScriptedClient:
    """Answers each lease statement from a script (the real one is tested on the test bed)."""

    def __init__(self, *outcomes: LeaseRow | bool | Failure) -> None:
        self.outcomes = list(outcomes)
        self.steps: list[Step] = []

    def connect(self) -> Identity:
        return Identity("n1", "uuid-1")

    def run(self, step: Step) -> LeaseRow | bool | Failure:
        self.steps.append(step)
        return self.outcomes.pop(0)

    def close(self) -> None:
        pass


def runner(clock: Clock, client: Any) -> tuple[LeaseRunner, VerdictStore]:
    store = VerdictStore(["n1"], max_age=7.0, clock=clock, healthy_max_age=3.5)
    store.enable_writer(2.5)
    return LeaseRunner("n1", client, store, 3.0, period=1.0, tick=0.25, clock=clock), store


def test_nothing_before_the_first_verdict_then_one_poll_per_period(clock: Clock) -> None:
    client = ScriptedClient(LeaseRow(), True, True)
    job, store = runner(clock, client)
    job.run_once()
    assert client.steps == []  # no verdict yet: the node is not asked
    put(store, "n1", Snapshot(SYNCED), clock.now)
    job.run_once()  # read the free lease, acquire it
    assert job.state.role == WRITER and store.writer_view("n1").writer
    for _ in range(3):  # the next three ticks: not due
        clock.now += 0.25
        put(store, "n1", Snapshot(SYNCED), clock.now)
        job.run_once()
    assert len(client.steps) == 2
    clock.now += 0.25
    job.run_once()
    assert client.steps[-1] == Renew(1) and len(client.steps) == 3


def test_after_a_timeout_it_polls_again_at_the_next_tick(clock: Clock) -> None:
    timeout = Failure("timeout", "a lease statement got no answer within 1 s (lease deadline)")
    client = ScriptedClient(timeout, LeaseRow(holder="n2", holder_id="uuid-2", epoch=1))
    job, store = runner(clock, client)
    put(store, "n1", Snapshot(SYNCED), clock.now)
    job.run_once()
    assert job.state.failure == "timeout"
    clock.now += 0.25
    job.run_once()
    assert client.steps == [Read(), Read()]
    assert store.writer_view("n1").reason == "standby (writer: n2)"


def test_maintenance_releases_at_the_next_tick_not_a_period_later(clock: Clock) -> None:
    from galera_health.maintenance import Maintenance

    client = ScriptedClient(LeaseRow(), True, True)
    job, store = runner(clock, client)
    put(store, "n1", Snapshot(SYNCED), clock.now)
    job.run_once()
    assert job.state.role == WRITER
    clock.now += 0.25
    store.set_maintenance({"n1": Maintenance(reason="", since=1.0, by="ops", path="/m")})
    job.run_once()
    assert client.steps[-1] == Release(1) and job.state.role == "out"


class StillLease:
    """A lease held by n2 that never moves; each read takes `latencies` seconds in turn (then
    the last one), on the test clock. Records when each statement was sent."""

    def __init__(self, clock: Clock, latencies: list[float]) -> None:
        self.clock, self.latencies = clock, latencies
        self.row = LeaseRow(holder="n2", holder_id="uuid-2", epoch=1, counter=7)
        self.sent: list[tuple[float, Step]] = []

    def connect(self) -> Identity:
        return Identity("n1", "uuid-1")

    def run(self, step: Step) -> LeaseRow | bool:
        self.sent.append((self.clock.now, step))
        self.clock.now += self.latencies.pop(0) if len(self.latencies) > 1 else self.latencies[0]
        return self.row if isinstance(step, Read) else True

    def close(self) -> None:
        pass


def test_a_still_lease_is_polled_when_it_becomes_takeable_not_a_period_later(clock: Clock) -> None:
    """The take-over clock runs from the end of the read that first saw a version, so a later
    read that answers faster finds the lease a little short of writer_takeover (2.95 s at the
    read sent 3 s after). The poll comes back when the lease is takeable, not a period later."""
    client = StillLease(clock, [0.1, 0.05])
    job, store = runner(clock, client)
    start = clock.now
    while not any(isinstance(step, Acquire) for _, step in client.sent):
        put(store, "n1", Snapshot(SYNCED), clock.now)
        job.run_once()
        clock.now = start + 0.25 * (round((clock.now - start) / 0.25) + 1)
        assert clock.now - start < 10
    sent = [(round(at - start, 2), type(step).__name__) for at, step in client.sent]
    reads = [(0.0, "Read"), (1.0, "Read"), (2.0, "Read"), (3.0, "Read"), (3.25, "Read")]
    assert sent == [*reads, (3.3, "Acquire")], sent


def test_a_take_over_abandoned_at_its_deadline_and_committed_later_is_proven_at_once(
    clock: Clock,
) -> None:
    """A take-over sent while the cluster is stalled times out; after the eviction it commits.
    The next tick reads the row, finds itself the holder and renews: the writer at once."""
    held = LeaseRow(holder="n2", holder_id="uuid-2", epoch=1, counter=7)
    mine = LeaseRow(holder="n1", holder_id="uuid-1", epoch=2, counter=8)
    timeout = Failure("timeout", "a lease statement got no answer within 1 s (lease deadline)")
    client = ScriptedClient(held, held, timeout, mine, True)
    job, store = runner(clock, client)
    put(store, "n1", Snapshot(SYNCED), clock.now)
    job.run_once()
    clock.now += 3.0
    put(store, "n1", Snapshot(SYNCED), clock.now)
    job.run_once()  # still for 3 s: Acquire, which times out
    assert job.state.failure == "timeout" and client.steps[-1] == Acquire(held)
    clock.now += 0.25
    put(store, "n1", Snapshot(SYNCED), clock.now)
    job.run_once()
    assert client.steps[-2:] == [Read(), Renew(2)]
    assert job.state.role == WRITER and store.writer_view("n1").writer


class Records(logging.Handler):
    """The election's log lines as the agent's handler would pass them (its repeat filter on)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(RepeatFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_every_change_of_role_is_one_transition_line_chained_from_the_last(clock: Clock) -> None:
    """writer -> unavailable -> standby -> writer -> unavailable -> standby, twice within the
    repeat filter's minute: each change is one line, none held back, and each line's `from` is
    the previous line's `to`; a renewal that changed nothing never reads "writer: n1" on n1."""
    theirs = LeaseRow(holder="n2", holder_id="uuid-2", epoch=2, counter=3)
    timeout = Failure("timeout", "a lease statement got no answer within 1 s (lease deadline)")
    cycle: list[LeaseRow | bool | Failure] = [LeaseRow(), True, timeout, theirs]
    client = ScriptedClient(*cycle, LeaseRow(epoch=2, counter=4), True, timeout, theirs)
    job, store = runner(clock, client)
    handler = Records()
    logger = logging.getLogger("galera_health")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    reasons: list[str] = []
    try:
        for _ in range(6):
            put(store, "n1", Snapshot(SYNCED), clock.now)
            job.run_once()
            reasons.append(store.writer_view("n1").reason)
            clock.now += 1.0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [r for r in handler.records if getattr(r, "event", None) == "writer"]
    moves = [(getattr(r, "from"), r.to) for r in lines]
    assert moves == [
        ("starting", "writer"),
        ("writer", "unavailable"),
        ("unavailable", "standby"),
        ("standby", "writer"),
        ("writer", "unavailable"),
        ("unavailable", "standby"),
    ], moves
    assert all(getattr(r, "transition", False) for r in lines)
    assert [r.levelno for r in lines].count(logging.WARNING) == 2  # the two losses of the role
    assert not any("writer: n1" in r.getMessage() for r in lines)
    assert not any("writer: n1" in reason for reason in reasons), reasons


def test_a_standby_never_names_itself_as_someone_elses_writer() -> None:
    row = LeaseRow(holder="n1", holder_id="uuid-1", epoch=4, counter=9)
    lost = LeaseState("n1", role=STANDBY, row=row, own_id="uuid-1")
    text = role_text(lost)
    assert text == "standby (the lease names this node, not proved by a renewal yet)", text
    other = LeaseState("n2", role=STANDBY, row=row, own_id="uuid-2")
    assert role_text(other) == "standby (writer: n1)"
