"""The lease job (poller.LeaseRunner): one lease poll per period, again at the next tick after a
statement timed out, when a still lease becomes takeable, nothing before the node's first
verdict; with scripted lease clients."""

from __future__ import annotations

from typing import Any

from galera_health.lease import (
    WRITER,
    Acquire,
    Failure,
    Identity,
    LeaseRow,
    Read,
    Release,
    Renew,
    Step,
)
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
