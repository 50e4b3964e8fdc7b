"""The writer lease's decision (galera_health.lease), table-driven and without sleeping: the row
observed + the node's own verdict + its own clock -> the next statement and the role."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import pytest

from galera_health.lease import (
    OUT,
    STANDBY,
    UNAVAILABLE,
    WRITER,
    Acquire,
    Failure,
    HandOver,
    Identity,
    LeaseRow,
    LeaseState,
    Read,
    Release,
    Renew,
    RequestHandover,
    Step,
    advance,
    answer,
    foreign_write,
    keeps_role,
    lease_age,
    next_poll,
    start,
    takeover_wait,
)

TAKEOVER = 3.0
VALIDITY = 2.5
ME = Identity("n2", "uuid-2")
HELD = LeaseRow(holder="n1", holder_id="uuid-1", epoch=4, counter=10)
MINE = LeaseRow(holder="n2", holder_id="uuid-2", epoch=4, counter=10)
FREE = LeaseRow(epoch=4, counter=11)
MOVED = replace(HELD, counter=11)
NEXT_EPOCH = replace(HELD, epoch=5)
ASKED = replace(MINE, next_holder="n3", next_holder_id="uuid-3", next_priority=5)
PREFERRED = replace(ME, priority=2)
NEW = LeaseState("n2")


def seen(row: LeaseRow, at: float) -> LeaseState:
    return LeaseState("n2", role=STANDBY, row=row, seen_at=at)


def holding(epoch: int = 4, renewed: float = 100.0) -> LeaseState:
    return LeaseState(
        "n2", role=WRITER, row=MINE, seen_at=renewed, holding=epoch, renewed_at=renewed
    )


@pytest.mark.parametrize(
    ("state", "usable", "step"),
    [
        (LeaseState("n2"), True, Read()),
        (LeaseState("n2"), False, Read()),
        (holding(), True, Renew(4)),  # the holder renews without reading first
        (holding(), False, Release(4)),  # maintenance, drain, unusable: release at once
    ],
)
def test_the_first_statement_of_a_poll(state: LeaseState, usable: bool, step: Step) -> None:
    assert start(state, usable) == step


# (what, state before, row read, usable, me, now) -> (next step, role)
READS: list[tuple[str, LeaseState, LeaseRow, bool, Identity, float, Step | None, str]] = [
    ("free: take it at once", NEW, FREE, True, ME, 100.0, Acquire(FREE), STANDBY),
    ("free, node unusable", NEW, FREE, False, ME, 100.0, None, OUT),
    ("held, first seen: wait", NEW, HELD, True, ME, 100.0, None, STANDBY),
    ("held, still just short", seen(HELD, 100.0), HELD, True, ME, 102.99, None, STANDBY),
    ("held, still: take over", seen(HELD, 100.0), HELD, True, ME, 103.0, Acquire(HELD), STANDBY),
    ("moved: clock restarts", seen(HELD, 90.0), MOVED, True, ME, 103.0, None, STANDBY),
    ("new epoch: clock restarts", seen(HELD, 90.0), NEXT_EPOCH, True, ME, 103.0, None, STANDBY),
    ("dead holder, unusable node", seen(HELD, 90.0), HELD, False, ME, 103.0, None, OUT),
    ("ours (agent restarted): renew", NEW, MINE, True, ME, 100.0, Renew(4), STANDBY),
    ("ours but unusable: release", seen(MINE, 99.0), MINE, False, ME, 100.0, Release(4), STANDBY),
    ("ours, asked: hand over", NEW, ASKED, True, ME, 100.0, HandOver(ASKED), STANDBY),
    ("higher priority: ask", seen(HELD, 100.0), HELD, True, PREFERRED, 101.0,
     RequestHandover(HELD), STANDBY),
    ("higher priority, asked already", seen(HELD, 100.0), replace(HELD, next_holder_id="u3"),
     True, PREFERRED, 101.0, None, STANDBY),
    ("same priority: sticky", seen(HELD, 100.0), replace(HELD, priority=2), True, PREFERRED,
     101.0, None, STANDBY),
    ("priority off: sticky", seen(HELD, 100.0), HELD, True, ME, 101.0, None, STANDBY),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "state", "row", "usable", "me", "now", "step", "role"),
    READS,
    ids=[r[0] for r in READS],
)
def test_after_a_read(
    what: str,
    state: LeaseState,
    row: LeaseRow,
    usable: bool,
    me: Identity,
    now: float,
    step: Step | None,
    role: str,
) -> None:
    after, following = advance(state, Read(), row, me, usable, TAKEOVER, now - 0.01, now)
    assert (following, after.role) == (step, role)
    assert after.row == row
    moved = state.row is None or state.row.version != row.version
    assert after.seen_at == (now if moved else state.seen_at)


def test_a_committed_take_over_makes_a_writer_from_the_start_of_its_statement() -> None:
    state, step = advance(seen(HELD, 100.0), Acquire(HELD), True, ME, True, TAKEOVER, 103.0, 103.2)
    assert step is None
    assert (state.role, state.holding, state.renewed_at) == (WRITER, 5, 103.0)
    assert state.row == LeaseRow(holder="n2", holder_id="uuid-2", epoch=5, counter=11)
    assert answer(state, True, "n2: synced", 103.2, VALIDITY) == (True, "writer (epoch 5)")


def test_a_lost_take_over_is_standby_and_reads_who_won() -> None:
    state, step = advance(seen(HELD, 100.0), Acquire(HELD), False, ME, True, TAKEOVER, 103, 103.1)
    assert (state.role, state.holding, step) == (STANDBY, None, Read())


def test_a_committed_renewal_extends_the_role() -> None:
    state, step = advance(holding(renewed=100.0), Renew(4), True, ME, True, TAKEOVER, 101.0, 101.1)
    assert (state.role, state.holding, state.renewed_at, step) == (WRITER, 4, 101.0, None)
    assert state.row is not None and state.row.counter == 11


def test_a_renewal_that_changed_nothing_is_no_longer_writer_and_reads_why() -> None:
    state, step = advance(holding(), Renew(4), False, ME, True, TAKEOVER, 101.0, 101.1)
    assert (state.role, state.holding, state.renewed_at, step) == (STANDBY, None, None, Read())
    assert answer(state, True, "", 101.1, VALIDITY)[0] is False


@pytest.mark.parametrize(
    "failure",
    [
        Failure("not_primary", "the node cannot commit: not in the Primary component"),
        Failure("timeout", "a lease statement got no answer within 1 s (lease deadline)"),
        Failure("conflict", "lost to a concurrent write of the lease (certification)"),
    ],
)
def test_a_failed_renewal_fails_closed_at_once(failure: Failure) -> None:
    state, step = advance(holding(), Renew(4), failure, ME, True, TAKEOVER, 101.0, 101.5)
    assert (state.role, state.holding, state.failure, step) == (
        UNAVAILABLE,
        None,
        failure.kind,
        None,
    )
    assert answer(state, True, "", 101.5, VALIDITY) == (False, f"no lease ({failure.detail})")


def test_a_failed_read_keeps_the_take_over_clock_of_a_stopped_holder() -> None:
    state = seen(HELD, 100.0)
    state, _ = advance(state, Read(), Failure("timeout", "t"), ME, True, TAKEOVER, 101.0, 102.0)
    assert state.seen_at == 100.0
    state, step = advance(state, Read(), HELD, ME, True, TAKEOVER, 103.0, 103.1)
    assert step == Acquire(HELD)


def test_release_and_hand_over_give_the_role_up() -> None:
    released, step = advance(holding(), Release(4), True, ME, False, TAKEOVER, 101, 101.1)
    assert (released.role, released.holding, step) == (OUT, None, None)
    asked = replace(MINE, next_holder="n3", next_holder_id="uuid-3")
    given, step = advance(holding(), HandOver(asked), True, ME, True, TAKEOVER, 101, 101.1)
    assert (given.role, given.holding, given.detail, step) == (
        STANDBY,
        None,
        "handed over to n3",
        None,
    )


ANSWERS: list[tuple[str, LeaseState | None, bool, float, bool, str]] = [
    ("no state yet", None, True, 100.0, False, "starting (no lease read yet)"),
    ("fresh writer", holding(renewed=100.0), True, 102.5, True, "writer (epoch 4)"),
    ("writer past validity", holding(renewed=100.0), True, 102.6, False,
     "writer lease not renewed for 2.6 s (valid 2.5 s)"),
    ("writer whose /health is 503", holding(renewed=100.0), False, 100.1, False, "maintenance"),
    ("standby names the writer", seen(HELD, 100.0), True, 100.5, False, "standby (writer: n1)"),
    ("free lease", seen(FREE, 100.0), True, 100.5, False, "standby (no writer: the lease is free)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "state", "health", "now", "writer", "reason"), ANSWERS, ids=[a[0] for a in ANSWERS]
)
def test_the_writer_answer(
    what: str, state: LeaseState | None, health: bool, now: float, writer: bool, reason: str
) -> None:
    assert answer(state, health, "maintenance", now, VALIDITY) == (writer, reason)


def test_lease_age_is_since_the_lease_last_moved() -> None:
    assert lease_age(None, 5.0) is None
    assert lease_age(seen(HELD, 100.0), 101.5) == 1.5


class Table:
    """The lease row with the conditional UPDATEs of lease_sql.py applied atomically: what
    certification gives (one of concurrent writes commits), without a cluster."""

    def __init__(self, legacy: frozenset[str] = frozenset()) -> None:
        self.row = LeaseRow()
        self.writes = 0
        self.legacy = legacy  # agents of the last release: their writes leave validity_ms alone

    def run(self, step: Step, me: Identity) -> LeaseRow | bool:
        if isinstance(step, Read):
            return self.row
        new = self._write(self.row, step, me)
        if new is None:
            return False
        if me.name in self.legacy:
            new = replace(new, validity_ms=self.row.validity_ms)
        self.row, self.writes = new, self.writes + 1
        return True

    @staticmethod
    def _write(row: LeaseRow, step: Step, me: Identity) -> LeaseRow | None:
        mine = row.holder_id == me.id
        if isinstance(step, Renew):
            ok = mine and row.epoch == step.epoch and not row.next_holder_id
            return replace(row, counter=row.counter + 1, validity_ms=me.validity_ms) if ok else None
        if isinstance(step, Acquire):
            if row.version != step.row.version:
                return None
            return LeaseRow(
                me.name, me.id, me.priority, row.epoch + 1, row.counter + 1,
                validity_ms=me.validity_ms,
            )  # fmt: skip
        if isinstance(step, Release):
            ok = mine and row.epoch == step.epoch
            return LeaseRow(epoch=row.epoch, counter=row.counter + 1) if ok else None
        if isinstance(step, RequestHandover):
            ok = row.holder_id == step.row.holder_id and row.epoch == step.row.epoch
            if not ok or row.next_holder_id:
                return None
            return replace(
                row, next_holder=me.name, next_holder_id=me.id, next_priority=me.priority
            )
        assert isinstance(step, HandOver)
        ok = mine and row.epoch == step.row.epoch
        if not ok or row.next_holder_id != step.row.next_holder_id:
            return None
        return LeaseRow(
            row.next_holder, row.next_holder_id, row.next_priority, row.epoch + 1, row.counter + 1
        )


def simulate(
    until: float, usable: dict[str, Callable[[float], bool]], alive: dict[str, float],
    priorities: dict[str, int] | None = None, answering: dict[str, float] | None = None,
    periods: dict[str, float] | None = None, legacy: frozenset[str] = frozenset(),
) -> list[tuple[float, tuple[str, ...]]]:  # fmt: skip
    """Three contenders polling every 1 s (or their own `periods`, each with the validity and
    take-over config.py derives from it) at their own phase; the /writer answers every 50 ms.
    `alive`: until when a node's lease job runs; `answering`: until when its agent answers
    HTTP (default: as long as its lease job runs); `legacy`: agents of the last release."""
    answering = answering or alive
    table = Table(legacy)
    names = sorted(usable)
    period = {n: (periods or {}).get(n, 1.0) for n in names}
    validity = {n: period[n] + VALIDITY - 1.0 for n in names}
    takeover = {n: validity[n] + TAKEOVER - VALIDITY for n in names}
    me = {
        n: Identity(
            n, f"uuid-{n}", (priorities or {}).get(n, 0),
            0 if n in legacy else round(validity[n] * 1000),
        )
        for n in names
    }  # fmt: skip
    states = {n: LeaseState(n) for n in names}
    phase = {n: 0.3 * i for i, n in enumerate(names)}
    answers: list[tuple[float, tuple[str, ...]]] = []
    now, tick = 0.0, 0.05
    while now < until:
        for n in names:
            every = round(period[n] / tick)
            due = round((now - phase[n]) / tick) % every == 0 and now >= phase[n]
            if due and now < alive[n]:
                ok = usable[n](now)
                step: Step | None = start(states[n], ok)
                while step is not None:
                    outcome = table.run(step, me[n])
                    states[n], step = advance(
                        states[n], step, outcome, me[n], ok, takeover[n], now, now
                    )
        writers = tuple(
            n
            for n in names
            if answer(states[n], now < answering[n] and usable[n](now), "", now, validity[n])[0]
        )
        answers.append((round(now, 2), writers))
        now += tick
    return answers


def first_writer_after(answers: list[tuple[float, tuple[str, ...]]], at: float, old: str) -> float:
    return next(t for t, w in answers if t >= at and len(w) == 1 and w[0] != old) - at


ALWAYS: Callable[[float], bool] = lambda _: True  # noqa: E731


def test_simulated_election_one_writer_take_over_and_no_move_back() -> None:
    forever = {"n1": 1e9, "n2": 1e9, "n3": 1e9}
    answers = simulate(10.0, {"n1": ALWAYS, "n2": ALWAYS, "n3": ALWAYS}, forever)
    steady = [w for t, w in answers if t >= 2.0]
    assert all(w == ("n1",) for w in steady), steady[:5]  # the first poller wins the free lease
    # n1's agent dies at 10 s: one take-over after the counter stood still for TAKEOVER
    answers = simulate(30.0, {"n1": ALWAYS, "n2": ALWAYS, "n3": ALWAYS}, {**forever, "n1": 10.0})
    assert all(len(w) <= 1 for _, w in answers)
    took = first_writer_after(answers, 10.0, "n1")
    assert TAKEOVER - 1.0 <= took <= TAKEOVER + 2.0, took
    after = {w for t, w in answers if t >= 10.0 + took}
    assert len(after) == 1, after  # moved once, stays


def test_simulated_stalled_lease_job_never_makes_two_writers() -> None:
    """The holder's renewals stop (stuck on replication) while its agent still answers: its 200
    ends writer_validity after the last renewal began, before anyone may take over."""
    forever = {"n1": 1e9, "n2": 1e9, "n3": 1e9}
    answers = simulate(
        30.0, {"n1": ALWAYS, "n2": ALWAYS, "n3": ALWAYS}, {**forever, "n1": 10.0}, None, forever
    )
    assert all(len(w) <= 1 for _, w in answers), [a for a in answers if len(a[1]) > 1][:3]
    assert first_writer_after(answers, 10.0, "n1") <= TAKEOVER + 2.0


def test_simulated_maintenance_releases_at_once_and_the_role_stays_away() -> None:
    def n1(now: float) -> bool:
        return not 10.0 <= now < 20.0  # maintenance from 10 s to 20 s

    forever = {"n1": 1e9, "n2": 1e9, "n3": 1e9}
    answers = simulate(30.0, {"n1": n1, "n2": ALWAYS, "n3": ALWAYS}, forever)
    assert all(len(w) <= 1 for _, w in answers)
    assert first_writer_after(answers, 10.0, "n1") <= 2.0
    assert all("n1" not in w for t, w in answers if t >= 10.0)  # sticky: no move back


def test_simulated_priority_fails_back_by_a_hand_over_without_two_writers() -> None:
    def n1(now: float) -> bool:
        return not 5.0 <= now < 10.0

    forever = {"n1": 1e9, "n2": 1e9, "n3": 1e9}
    answers = simulate(20.0, {"n1": n1, "n2": ALWAYS, "n3": ALWAYS}, forever, {"n1": 5})
    assert all(len(w) <= 1 for _, w in answers)
    assert {w for t, w in answers if 7.0 <= t < 10.0} <= {("n2",), ("n3",)}
    assert all(w == ("n1",) for t, w in answers if t >= 13.0)  # back on the preferred node


MIXED = {"n1": 4.0, "n2": 1.0, "n3": 1.0}  # the measured case of issue 21: a slow holder


def moves(answers: list[tuple[float, tuple[str, ...]]]) -> list[str]:
    held = [w[0] for _, w in answers if len(w) == 1]
    return [b for a, b in itertools.pairwise(held) if a != b]


def test_simulated_mixed_settings_a_slow_holder_keeps_the_role() -> None:
    """n1 renews every 4 s, the others would take over after 3 s of their own: the row's
    validity_ms makes them wait 6 s, so the role never moves and there is never a second 200."""
    forever = {"n1": 1e9, "n2": 1e9, "n3": 1e9}
    answers = simulate(60.0, {"n1": ALWAYS, "n2": ALWAYS, "n3": ALWAYS}, forever, periods=MIXED)
    assert all(w == ("n1",) for t, w in answers if t >= 1.0), moves(answers)
    # n1's agent dies at 30 s: one take-over, after n1's promise (5.5 s + margin) at the latest
    # a period later
    answers = simulate(
        60.0, {"n1": ALWAYS, "n2": ALWAYS, "n3": ALWAYS}, {**forever, "n1": 30.0}, periods=MIXED
    )
    assert all(len(w) <= 1 for _, w in answers)
    assert 6.0 - 4.0 <= first_writer_after(answers, 30.0, "n1") <= 6.0 + 1.0
    assert len(moves(answers)) == 1


def test_simulated_mixed_settings_without_the_promise_steal_the_role() -> None:
    """The same mix where the slow holder is of the last release (it never writes validity_ms):
    contenders wait their own take-over and steal the role from a live holder; what a rolling
    upgrade with changed settings would do (docs/architecture.md, "Mixed settings")."""
    forever = {"n1": 1e9, "n2": 1e9, "n3": 1e9}
    answers = simulate(
        30.0, {"n1": ALWAYS, "n2": ALWAYS, "n3": ALWAYS}, forever, periods=MIXED,
        legacy=frozenset({"n1"}),
    )  # fmt: skip
    assert moves(answers), "the old-release holder kept the role: the test shows nothing"


def test_simulated_mixed_settings_fast_holder_slow_contender() -> None:
    """A fast holder (1 s) and a slow contender (4 s: it waits 6 s): one writer, never two."""
    forever = {"n1": 1e9, "n2": 1e9, "n3": 1e9}
    periods = {"n1": 1.0, "n2": 4.0, "n3": 0.25}
    answers = simulate(
        40.0, {"n1": ALWAYS, "n2": ALWAYS, "n3": ALWAYS}, {**forever, "n1": 20.0}, periods=periods
    )
    assert all(len(w) <= 1 for _, w in answers)
    assert len(moves(answers)) == 1


# (what, row, own take-over) -> the wait
WAITS: list[tuple[str, LeaseRow, float, float]] = [
    ("no promise (last release, free, hand-over)", HELD, 3.0, 3.0),
    ("the holder promises less than I wait", replace(HELD, validity_ms=1500), 3.0, 3.0),
    ("the same settings", replace(HELD, validity_ms=2500), 3.0, 3.0),
    ("a slower holder: its promise + margin", replace(HELD, validity_ms=5500), 3.0, 6.0),
    ("my own take-over is longer", replace(HELD, validity_ms=2500), 9.0, 9.0),
]


@pytest.mark.parametrize(("what", "row", "own", "wait"), WAITS, ids=[w[0] for w in WAITS])
def test_takeover_wait(what: str, row: LeaseRow, own: float, wait: float) -> None:
    assert takeover_wait(row, own) == pytest.approx(wait)


def test_a_slow_holders_promise_delays_the_take_over_and_the_next_poll() -> None:
    slow = replace(HELD, validity_ms=5500)
    state, step = advance(seen(slow, 100.0), Read(), slow, ME, True, TAKEOVER, 105.9, 105.95)
    assert step is None
    assert next_poll(state, 105.9, 1.0, TAKEOVER) == pytest.approx(106.0)
    state, step = advance(state, Read(), slow, ME, True, TAKEOVER, 106.0, 106.0)
    assert step == Acquire(slow)


def test_a_won_take_over_and_a_renewal_state_my_promise() -> None:
    me = replace(ME, validity_ms=2500)
    state, _ = advance(seen(HELD, 100.0), Acquire(HELD), True, me, True, TAKEOVER, 103.0, 103.1)
    assert state.row is not None and state.row.validity_ms == 2500


GONE = replace(HELD, holder_member=False)
# (what, row before, row after, seconds between the reads) -> a foreign write (its start) or None
FOREIGN: list[tuple[str, LeaseRow, LeaseRow, float, str | None]] = [
    ("a renewal a second later", HELD, MOVED, 1.0, None),
    ("two renewals and a take-over's proof", HELD, replace(HELD, counter=13), 1.0, None),
    ("a slow reader sees many renewals", HELD, replace(HELD, counter=40), 30.0, None),
    ("a jump no agent makes", HELD, replace(HELD, counter=20), 1.0,
     "the lease counter jumped by 10 in 1.0 s"),
    ("the counter went back", MOVED, HELD, 1.0, "the lease counter went back (11 -> 10)"),
    ("a dead holder's lease stands still", GONE, GONE, 1.0, None),
    ("moves while its holder is no member", GONE, replace(GONE, counter=11), 1.0,
     "the lease moved (10 -> 11) while its holder n1 is not a member of the cluster"),
    ("a holder just evicted: its last renewal", HELD, replace(GONE, counter=11), 1.0, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "before", "after", "seconds", "found"), FOREIGN, ids=[f[0] for f in FOREIGN]
)
def test_foreign_write(
    what: str, before: LeaseRow, after: LeaseRow, seconds: float, found: str | None
) -> None:
    text = foreign_write(before, after, seconds)
    assert (text if found is None else (text or "")[: len(found)]) == found


def test_a_foreign_write_is_kept_until_the_holder_changes_and_the_row_still_decides() -> None:
    state = replace(seen(GONE, 100.0), read_at=100.0)
    moved = replace(GONE, counter=11)
    state, step = advance(state, Read(), moved, ME, True, TAKEOVER, 101.0, 101.0)
    assert state.foreign is not None and state.seen_at == 101.0  # reported, and followed
    assert step is None
    state, _ = advance(state, Read(), moved, ME, True, TAKEOVER, 102.0, 102.0)
    assert state.foreign is not None
    taken = replace(HELD, holder="n3", holder_id="uuid-3", epoch=5, counter=12)
    state, _ = advance(state, Read(), taken, ME, True, TAKEOVER, 103.0, 103.0)
    assert state.foreign is None


# (what, holds the role, healthy, health state, donor since, now) -> counts as usable
KEEPS: list[tuple[str, bool, bool, str, float | None, float, bool]] = [
    ("healthy", False, True, "synced", None, 100.0, True),
    ("a donor contender is no candidate", False, False, "donor", 99.9, 100.0, False),
    ("the holder, a donor just now (IST)", True, False, "donor", 99.9, 100.0, True),
    ("the holder, a donor for 1.9 s", True, False, "donor", 98.1, 100.0, True),
    ("the holder, a donor for 2 s (an SST)", True, False, "donor", 98.0, 100.0, False),
    ("the holder in maintenance", True, False, "maintenance", None, 100.0, False),
    ("the holder desynced by an operator", True, False, "desynced", None, 100.0, False),
]


@pytest.mark.parametrize(
    ("what", "holds", "healthy", "health", "since", "now", "usable"),
    KEEPS,
    ids=[k[0] for k in KEEPS],
)
def test_keeps_role(
    what: str, holds: bool, healthy: bool, health: str, since: float | None, now: float,
    usable: bool,
) -> None:  # fmt: skip
    state = holding() if holds else seen(HELD, 90.0)
    assert keeps_role(state, healthy, health, since, now) is usable
