"""The lease job (poller.LeaseRunner): one lease poll per period, again at the next tick after a
statement timed out, nothing before the node's first verdict; with a scripted lease client."""

from __future__ import annotations

from typing import Any

from galera_health.lease import WRITER, Failure, Identity, LeaseRow, Read, Release, Renew, Step
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
