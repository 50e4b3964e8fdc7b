"""The writer election's decision, pure: the lease row observed + this node's own verdict + its
own monotonic clock -> the next lease statement to run, and the role to answer /writer with.

One row in the cluster (galera_health.writer_lease) says who the writer is. Galera certifies
every conditional UPDATE of it, so among concurrent ones exactly one commits cluster-wide, and
only a node in the Primary component commits at all. No wall clocks are compared: a contender
takes over only when the row's version (epoch, counter) has not moved for `takeover` seconds on
its own monotonic clock. docs/architecture.md, "One writer", says why and what was weighed.
The statements themselves are in lease_sql.py; this module does no I/O and reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from .config import LEASE_MARGIN, LEASE_MIN_INTERVAL, WRITER_DONOR_GRACE
from .verdict import State


@dataclass(frozen=True)
class LeaseRow:
    """The lease as one read of it found it. `holder_id` is "" when nobody holds it."""

    holder: str = ""  # the holder's wsrep_node_name, for people
    holder_id: str = ""  # the holder's wsrep_gcomm_uuid: the identity that renews
    priority: int = 0  # the holder's writer_priority
    epoch: int = 0  # +1 at every change of holder
    counter: int = 0  # +1 at every write of the row
    next_holder: str = ""  # a node of higher priority asking for the role (failback)
    next_holder_id: str = ""
    next_priority: int = 0
    # The holder's promise: it answers 200 at most this long (ms) after the start of a renewal
    # (its writer_validity), written with every renewal. 0: not stated (nobody holds, a
    # hand-over not yet renewed, or a holder of a version before it; docs/architecture.md,
    # "Mixed settings").
    validity_ms: int = 0
    # Read beside the row, not in it: whether holder_id is a member of the reading node's
    # cluster (True when nobody holds it).
    holder_member: bool = True

    @property
    def version(self) -> tuple[int, int]:
        return self.epoch, self.counter

    @property
    def released(self) -> bool:
        return not self.holder_id


@dataclass(frozen=True)
class Identity:
    """Who this contender is in the cluster (read from its node) and its writer_priority."""

    name: str
    id: str
    priority: int = 0
    validity_ms: int = 0  # its writer_validity: what its renewals promise (LeaseRow.validity_ms)


# --- the statements the decision asks for -------------------------------------------------


@dataclass(frozen=True)
class Read:
    """Read the node's own copy of the row (no sync wait: a stale copy only delays a take-over)."""


@dataclass(frozen=True)
class Renew:
    """Advance the counter, only while we hold `epoch` and nobody asked for the role."""

    epoch: int


@dataclass(frozen=True)
class Acquire:
    """Become the holder, only if the row still is at the version we judged (free or dead)."""

    row: LeaseRow


@dataclass(frozen=True)
class Release:
    """Give the role up at once (maintenance, drain, the node unusable): nobody waits for it."""

    epoch: int


@dataclass(frozen=True)
class RequestHandover:
    """writer_priority: ask the live holder of lower priority to hand the role to us."""

    row: LeaseRow


@dataclass(frozen=True)
class HandOver:
    """The holder hands the role to the node that asked for it (it renews before it is 200)."""

    row: LeaseRow


Step = Read | Renew | Acquire | Release | RequestHandover | HandOver


@dataclass(frozen=True)
class Failure:
    """A lease statement did not run: `kind` is a stable word (no_grant, timeout, conflict,
    not_primary, unreachable, error), `detail` one safe line."""

    kind: str
    detail: str


# What running a step gave: the row for Read, whether the UPDATE changed the row (it is
# committed: autocommit, certified) for the others, or why it failed.
Outcome = LeaseRow | bool | Failure


# --- what a contender remembers between polls, and publishes ------------------------------

# A node's part in the election, one word (in /status `writer.role` and the log's from/to):
# mypy refuses any other string.
Role = Literal["starting", "writer", "standby", "out", "unavailable"]
WRITER: Role = "writer"
STANDBY: Role = "standby"
OUT: Role = "out"  # its own node is not usable: not a candidate
UNAVAILABLE: Role = "unavailable"  # a lease statement failed (no grant, timeout, non-Primary, ...)
STARTING: Role = "starting"


@dataclass(frozen=True)
class LeaseState:
    """One node's part in the election: what it last saw of the row and whether it holds it.
    Published to the store after every step; /writer judges it at read time."""

    node: str
    role: Role = STARTING
    detail: str = ""
    row: LeaseRow | None = None
    seen_at: float | None = None  # monotonic: when row.version was first seen (moved)
    holding: int | None = None  # the epoch this node holds
    renewed_at: float | None = None  # monotonic start of the last committed renewal
    failure: str | None = None  # Failure.kind while unavailable
    read_at: float | None = None  # monotonic end of the last read
    # The last write of the row no agent can have made (docs/architecture.md, "Who may write
    # the lease"): reported in /status and the log, kept until the holder changes.
    foreign: str | None = None
    # What its last committed renewal promised (its writer_validity then, seconds): a reload
    # that changes the interval judges older renewals by their own promise, never a longer one.
    validity: float | None = None
    own_id: str = ""  # this node's identity, once known: a row naming it is never "someone else's"


def failed(state: LeaseState, failure: Failure) -> LeaseState:
    """A lease statement failed: not the writer, at once (fail closed). What was seen is kept,
    so a failed read never restarts the take-over clock of a holder that has stopped."""
    return replace(
        state,
        role=UNAVAILABLE,
        detail=failure.detail,
        holding=None,
        renewed_at=None,
        failure=failure.kind,
    )


def keeps_role(
    state: LeaseState, healthy: bool, health_state: State, donor_since: float | None, now: float
) -> bool:
    """Whether the node counts as usable for the lease: its /health is 200, or it holds the
    role and has been a Donor for less than WRITER_DONOR_GRACE (an IST donation: it keeps the
    role, and answers /writer like /health meanwhile; a longer one is an SST: it releases)."""
    if healthy:
        return True
    if state.holding is None or health_state != "donor" or donor_since is None:
        return False
    return now - donor_since < WRITER_DONOR_GRACE


def start(state: LeaseState, usable: bool) -> Step:
    """The first statement of a poll: the holder renews (or releases) without reading first;
    everyone else reads."""
    if state.holding is not None:
        return Renew(state.holding) if usable else Release(state.holding)
    return Read()


def _seen(state: LeaseState, row: LeaseRow, now: float) -> LeaseState:
    moved = state.row is None or state.seen_at is None or state.row.version != row.version
    foreign = state.foreign
    if state.row is None or state.row.epoch != row.epoch or state.row.holder_id != row.holder_id:
        foreign = None
    elif moved:
        foreign = foreign_write(state.row, row, now - (state.read_at or now)) or foreign
    return replace(
        state, row=row, seen_at=now if moved else state.seen_at, read_at=now, foreign=foreign
    )


def foreign_write(before: LeaseRow, after: LeaseRow, seconds: float) -> str | None:
    """What is wrong with a move of the row between two reads `seconds` apart (same epoch and
    holder), or None. An agent holding the lease writes it at most once per lease poll (at
    least LEASE_MIN_INTERVAL apart; +2 for a take-over's proving renewal and a release), and
    only while its node is a member of the cluster."""
    if after.version == before.version:
        return None
    if after.holder_id and not after.holder_member and not before.holder_member:
        return (
            f"the lease moved ({before.counter} -> {after.counter}) while its holder "
            f"{after.holder or after.holder_id} is not a member of the cluster: written by "
            "something other than an agent"
        )
    jump = after.counter - before.counter
    if jump < 0:
        return f"the lease counter went back ({before.counter} -> {after.counter})"
    if jump > seconds / LEASE_MIN_INTERVAL + 2:
        return (
            f"the lease counter jumped by {jump} in {seconds:.1f} s: written by something other "
            "than an agent"
        )
    return None


def advance(
    state: LeaseState,
    step: Step,
    outcome: Outcome,
    me: Identity,
    usable: bool,
    takeover: float,
    started: float,
    now: float,
) -> tuple[LeaseState, Step | None]:
    """The new state after `step` gave `outcome`, and the next statement of this poll (None: done).
    `started`: the monotonic time the step's statement was sent (a renewal's 200 counts from
    it, never from its answer); `now`: after the answer (a version counts as seen from then)."""
    state = replace(state, own_id=me.id)
    if isinstance(outcome, Failure):
        return failed(state, outcome), None
    state = replace(state, failure=None)
    if isinstance(step, Read):
        assert isinstance(outcome, LeaseRow)
        return _after_read(_seen(state, outcome, now), outcome, me, usable, takeover, now)
    assert isinstance(outcome, bool)
    changed = outcome
    if isinstance(step, (Renew, Acquire)):
        if not changed:
            # Not (or no longer) ours, someone asked for it, or another take-over won (maybe our
            # own earlier one, abandoned at its deadline and committed later): read to learn which.
            lost = replace(state, role=STANDBY, detail="", holding=None, renewed_at=None)
            return lost, Read()
        epoch = step.epoch if isinstance(step, Renew) else step.row.epoch + 1
        base = state.row if state.row is not None else LeaseRow()
        row = replace(
            base,
            holder=me.name,
            holder_id=me.id,
            priority=me.priority if isinstance(step, Acquire) else base.priority,
            epoch=epoch,
            counter=(step.row.counter if isinstance(step, Acquire) else base.counter) + 1,
            next_holder="",
            next_holder_id="",
            next_priority=0,
            validity_ms=me.validity_ms,
        )
        won = replace(
            state,
            role=WRITER,
            detail="",
            row=row,
            seen_at=now,
            holding=epoch,
            renewed_at=started,
            validity=me.validity_ms / 1000 if me.validity_ms else None,
        )
        return won, None
    if isinstance(step, Release):
        out = replace(state, role=OUT, detail="released the lease", holding=None, renewed_at=None)
        return out, None
    if isinstance(step, HandOver):
        detail = f"handed over to {step.row.next_holder}" if changed else ""
        return replace(state, role=STANDBY, detail=detail, holding=None, renewed_at=None), None
    # RequestHandover
    detail = "asked for the role (writer_priority)" if changed else ""
    return replace(state, role=STANDBY, detail=detail), None


def _after_read(
    state: LeaseState, row: LeaseRow, me: Identity, usable: bool, takeover: float, now: float
) -> tuple[LeaseState, Step | None]:
    if row.holder_id == me.id:
        # Ours (an agent restarted while its node kept the role, or a hand-over to us): prove it
        # by a renewal before answering 200, or give it up.
        state = replace(state, role=STANDBY, detail="")
        if not usable:
            return state, Release(row.epoch)
        if row.next_holder_id and row.next_holder_id != me.id:
            return state, HandOver(row)
        return state, Renew(row.epoch)
    if not usable:
        return replace(state, role=OUT, detail=""), None
    if row.released:
        return replace(state, role=STANDBY, detail="the lease is free"), Acquire(row)
    assert state.seen_at is not None
    still = now - state.seen_at
    if still >= takeover_wait(row, takeover):
        detail = f"{row.holder} did not renew for {still:.1f} s"
        return replace(state, role=STANDBY, detail=detail), Acquire(row)
    if me.priority > row.priority and not row.next_holder_id:
        return replace(state, role=STANDBY, detail=""), RequestHandover(row)
    return replace(state, role=STANDBY, detail=""), None


def takeover_wait(row: LeaseRow, takeover: float) -> float:
    """How long a contender waits for a still lease: its own writer_takeover, or longer when the
    holder's promise (its validity + LEASE_MARGIN) says so, so agents with different settings
    never take the role from a live holder nor answer 200 beside it."""
    return max(takeover, row.validity_ms / 1000 + LEASE_MARGIN)


def next_poll(state: LeaseState, started: float, period: float, takeover: float) -> float:
    """When the lease job should poll again, after a poll that started at `started`: a period
    later; at the next tick after a statement that timed out (replication blocked until Galera
    evicts a member: the take-over then commits right after the eviction); and no later than
    the moment a still lease becomes takeable (else the take-over waits up to a period more)."""
    if state.role == UNAVAILABLE and state.failure == "timeout":
        return started
    due = started + period
    row = state.row
    if state.holding is None and row is not None and not row.released and state.seen_at is not None:
        due = min(due, state.seen_at + takeover_wait(row, takeover))
    return due


# --- the answer ----------------------------------------------------------------------------


def answer(
    state: LeaseState | None, health_ok: bool, health_reason: str, now: float, validity: float
) -> tuple[bool, str]:
    """/writer for one node: 200 only on the holder whose last renewal started within
    `validity` (interval + the lease deadline + grace) and whose /health is 200; else 503 with
    a reason that names the writer."""
    if not health_ok:
        return False, health_reason
    if state is not None and state.role == WRITER and state.renewed_at is not None:
        validity = min(validity, state.validity) if state.validity is not None else validity
        age = now - state.renewed_at
        if age <= validity:
            return True, role_text(state)
        return False, f"writer lease not renewed for {age:.1f} s (valid {validity:g} s)"
    return False, role_text(state)


def role_text(state: LeaseState | None) -> str:
    """The role in words, as /writer and the election's log lines say it: a standby names the
    writer, never itself (a row naming this node that it has not proved by a renewal yet)."""
    if state is None or state.role == STARTING:
        return "starting (no lease read yet)"
    if state.role == UNAVAILABLE:
        return f"no lease ({state.detail})"
    if state.role == WRITER:
        return f"writer (epoch {state.holding})"
    row = state.row
    extra = f"; {state.detail}" if state.detail else ""
    if state.role == OUT:
        return f"out (not a candidate: its node is not usable{extra})"
    if row is None or row.released:
        return f"standby (no writer: {state.detail or 'the lease is free'})"
    if state.own_id and row.holder_id == state.own_id:
        return f"standby (the lease names this node, not proved by a renewal yet{extra})"
    return f"standby (writer: {row.holder}{extra})"


def lease_age(state: LeaseState | None, now: float) -> float | None:
    """Seconds since this node last saw the lease move (renewed it, for the holder)."""
    if state is None or state.seen_at is None:
        return None
    return now - state.seen_at
