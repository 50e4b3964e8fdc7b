"""Closing the old writer's sessions, the decision: pure (the node's /writer answers over time,
the grace and the time in; whether to kill now out). The statements are in sessions_sql.py.

Why (docs/architecture.md, "Closing the old writer's sessions"): a failed probe stops only new
flows. Azure's LB, HAProxy in TCP mode and kube-proxy keep established ones, so a pool's
connections go on writing to a node that is no longer the writer, and their commits conflict
with the new writer's on hot rows. After the grace (past the load balancer's detection, so the
clients reconnect to the new writer and not here again) the agent kills the sessions of the
client accounts named in writer_users, once per loss of the role.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

# "GRANT PROCESS, CONNECTION ADMIN ON *.* TO `w`@`%`": a global grant line of SHOW GRANTS
GLOBAL_GRANT = re.compile(r"^GRANT (.+?) ON \*\.\* TO ")
# what ALL PRIVILEGES on *.* stands for, of the privileges a kill needs
ALL = frozenset({"PROCESS", "CONNECTION ADMIN", "SUPER"})

# After a kill that failed for a reason that may pass (the node frozen, the connection lost),
# the next try comes this many seconds later; a missing privilege is not retried.
RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class KillClock:
    """What the decision remembers between two looks at the node's /writer answer."""

    writer: bool | None = None  # the last answer looked at; None: no answer judged yet
    since: float | None = None  # monotonic: when it stopped (or was found not) being the writer
    done: bool = False  # this loss of the role was dealt with (killed, or cannot be)
    retry_at: float | None = None  # monotonic: the next try after a failed one
    lost: bool = False  # the answer went 200 -> 503 (not only found 503 at the start)


def step(clock: KillClock, writer: bool | None, now: float, grace: float) -> tuple[KillClock, bool]:
    """The next clock, and whether to kill the writer_users' sessions now.

    `writer`: this node's /writer answer now (True = 200), None while the election has not
    judged it yet (the lease job is starting). A loss of the role is 200 -> 503, and also the
    first judged answer being 503 (an agent that starts beside a standby, or restarts after its
    node lost the role): a pool may still sit on this node either way."""
    if writer is None:
        return clock, False
    if writer:
        return KillClock(writer=True), False
    if clock.writer is not False:
        clock = KillClock(writer=False, since=now, lost=clock.writer is True)
    if clock.done or clock.since is None or now - clock.since < grace:
        return clock, False
    if clock.retry_at is not None and now < clock.retry_at:
        return clock, False
    return replace(clock, done=True), True


def failed(clock: KillClock, now: float, lasting: bool) -> KillClock:
    """A kill that did not complete: try again RETRY_SECONDS later, unless it cannot work until
    someone changes the grants (`lasting`: reported, not retried until the next loss)."""
    if lasting:
        return clock
    return replace(clock, done=False, retry_at=now + RETRY_SECONDS)


@dataclass(frozen=True)
class KillReport:
    """What the last kill (or the check of the writer account's privileges) found, for /status
    and /metrics. `problem` is one line naming the cause and the fix, None when it worked."""

    killed_total: int = 0  # sessions killed since the agent started
    last_killed: int | None = None  # by the last kill; None: none ran yet
    last_at: float | None = None  # wall clock of the last kill
    problem: str | None = None
    failures_total: int = 0


def reported(report: KillReport, killed: int, problem: str | None, wall: float) -> KillReport:
    """The report after one kill: `killed` sessions ended, and what stopped it, if anything."""
    return KillReport(
        killed_total=report.killed_total + killed,
        last_killed=killed,
        last_at=wall,
        problem=problem,
        failures_total=report.failures_total + (1 if problem is not None else 0),
    )


def global_privileges(grants: Iterable[str]) -> frozenset[str]:
    """The global privileges in SHOW GRANTS' lines: the account's own and its enabled roles'
    (what the server checks), upper case; ALL PRIVILEGES stands for the ones a kill needs."""
    held: set[str] = set()
    for line in grants:
        found = GLOBAL_GRANT.match(line)
        if found is not None:
            held.update(p.strip().upper() for p in found.group(1).split(","))
    if "ALL PRIVILEGES" in held:
        held |= ALL
    return frozenset(held)
