"""Closing the old writer's sessions, at the edge: the statements, run on the node's lease
connection (the writer account, every statement under the lease deadline) in the lease job's
thread, never the poll's or an HTTP thread's; sessions.py decides when.

What MariaDB asks for (10.5.2 and later, 10.11 measured on the test bed): seeing other accounts'
threads in the process list needs PROCESS (without it the list holds only the account's own,
so a kill would find nothing and look like success); killing them needs CONNECTION ADMIN (SUPER
before 10.5.2). Both are checked first, so a missing one is reported, never "killed 0".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from mysql.connector import errorcode
from mysql.connector import errors as myerrors

from . import lease, sessions
from .lease import Failure
from .lease_sql import LeaseClient
from .sessions import KillClock, KillReport
from .store import VerdictStore

log = logging.getLogger("galera_health")

# Only threads of the named client accounts: never system threads (applier, SST: 'system user'),
# the event scheduler, replication, or this connection.
LIST = (
    "SELECT ID FROM information_schema.PROCESSLIST WHERE USER IN ({users}) "
    "AND ID <> CONNECTION_ID() AND COMMAND NOT IN "
    "('Daemon', 'Binlog Dump', 'Slave_IO', 'Slave_SQL', 'Slave_worker')"
)
# The account's grants and those of its enabled roles (a default role, and roles granted to it,
# are included; information_schema.USER_PRIVILEGES shows a non-admin only its direct grants).
PRIVILEGES = "SHOW GRANTS"
NEEDED = "PROCESS, CONNECTION ADMIN ON *.*"
# Killed sessions that neither ended nor are marked Killed (kill_sessions says why), and how
# long to wait before killing those again.
SURVIVORS = (
    "SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({ids}) AND COMMAND <> 'Killed'"
)
RECHECK_SECONDS = 0.05
# All kills of one loss of the role within this long; what is left is killed at the next try.
KILL_DEADLINE = 2.0
ER_KILL_DENIED = errorcode.ER_KILL_DENIED_ERROR
ER_NO_SUCH_THREAD = errorcode.ER_NO_SUCH_THREAD


class NotPermitted(Exception):
    """The writer account lacks what killing others' sessions needs: one line with the fix."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def missing_privileges(cursor: Any, user: str) -> str | None:
    """None when the writer account may see and kill other accounts' sessions, else one line."""
    cursor.execute(PRIVILEGES)
    held = sessions.global_privileges(_text(row[0]) for row in cursor.fetchall())
    missing = []
    if "PROCESS" not in held:
        missing.append("PROCESS")
    if not {"CONNECTION ADMIN", "SUPER"} & held:
        missing.append("CONNECTION ADMIN")
    if not missing:
        return None
    return (
        f"the writer account {user!r} lacks {' and '.join(missing)}, so it cannot close "
        f"writer_users' sessions: GRANT {NEEDED} TO '{user}'@'<host>'"
    )


def kill_sessions(
    cursor: Any,
    users: Sequence[str],
    account: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, str | None]:
    """Kill the sessions of `users` on this node: (how many were killed, None or why it
    stopped). Raises only what the connection raised (the caller classifies it).

    A KILL the server accepted is not always acted on (likely wsrep's one-aborter rule: a
    thread Galera is aborting at that moment for a certification conflict, which the pool's
    hot-row writes keep meeting, is not aborted twice), and that client then sees a 1213 and
    keeps its connection, on the old writer (bench/writer_kill.py: 1 of 8 rounds left one of
    4 pooled connections alive after "killed 4"). So the killed ones are looked at again: one
    that neither ended nor shows `Killed` is killed again, until none is left or the deadline
    passes (docs/architecture.md, "Closing the old writer's sessions")."""
    problem = missing_privileges(cursor, account)
    if problem is not None:
        raise NotPermitted(problem)
    cursor.execute(LIST.format(users=", ".join(["%s"] * len(users))), tuple(users))
    found = [int(row[0]) for row in cursor.fetchall()]
    deadline = clock() + KILL_DEADLINE
    killed: set[int] = set()
    pending = found
    while pending:
        for session in pending:
            if clock() > deadline:
                within = f"within {KILL_DEADLINE:g} s; the rest next"
                return len(killed), f"killed {len(killed)} of {len(found)} {within}"
            try:
                cursor.execute(f"KILL CONNECTION {session}")
            except myerrors.DatabaseError as exc:
                if exc.errno == ER_NO_SUCH_THREAD:  # it ended by itself meanwhile
                    continue
                if exc.errno == ER_KILL_DENIED:
                    raise NotPermitted(
                        f"the writer account {account!r} may not kill other accounts' sessions: "
                        f"GRANT {NEEDED} TO '{account}'@'<host>'"
                    ) from None
                raise
            killed.add(session)
        cursor.execute(SURVIVORS.format(ids=", ".join(str(s) for s in pending)))
        pending = [int(row[0]) for row in cursor.fetchall()]
        if pending and clock() > deadline:
            return len(killed), (
                f"{len(pending)} session(s) still alive {KILL_DEADLINE:g} s after KILL; "
                "killing again at the next try"
            )
        if pending:
            sleep(RECHECK_SECONDS)
    return len(killed), None


class SessionCloser:
    """One node's session kill (writer_users): looks at the node's /writer answer every tick of
    the lease job and, sessions.step saying so, kills over the lease connection."""

    def __init__(
        self,
        name: str,
        client: LeaseClient,
        store: VerdictStore,
        users: Sequence[str],
        grace: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.client = client
        self.store = store
        self.users = tuple(users)
        self.grace = grace
        self._clock = clock
        self.kill_clock = KillClock()
        self.report = KillReport()
        self._checked = False  # the privileges were looked at once (for /status before a kill)
        self._logged: str | None = None  # the problem last logged: a retry logs no repeat

    def run_once(self) -> None:
        if not self.users:
            return
        now = self._clock()
        view = self.store.writer_view(self.name, now)
        judged = view.lease is not None and view.lease.role != lease.STARTING
        if not self._checked and judged:
            self._check()
        answer = view.writer if judged else None
        self.kill_clock, due = sessions.step(self.kill_clock, answer, now, self.grace)
        if due:
            self._kill(now)

    def _check(self) -> None:
        """At start: say at once when the account cannot do it, not at the first loss."""
        user = self.client.credentials.user
        found = self.client.use(lambda cursor: missing_privileges(cursor, user))
        if isinstance(found, Failure):
            return  # the lease job reports the connection; checked at the next tick
        self._checked = True
        # published either way: /status shows the kill armed (problem null) or why it is not
        self._publish(replace(self.report, problem=found))
        if found is not None:
            self._logged = found  # a kill refused for the same reason adds no second line
            log.error(
                "%s: writer sessions: %s",
                self.name,
                found,
                extra={"node": self.name, "event": "writer_kill_privileges"},
            )

    def _publish(self, report: KillReport) -> None:
        self.report = report
        self.store.publish_kill(self.name, report)

    def _work(self, cursor: Any) -> tuple[int, str | None, bool]:
        try:
            killed, problem = kill_sessions(cursor, self.users, self.client.credentials.user)
        except NotPermitted as exc:
            return 0, str(exc), True
        return killed, problem, False

    def _kill(self, now: float) -> None:
        outcome = self.client.use(self._work)
        after = self._clock() - (self.kill_clock.since or now)
        problem: str | None
        if isinstance(outcome, Failure):
            killed, problem, lasting = 0, f"no connection to kill over: {outcome.detail}", False
        else:
            killed, problem, lasting = outcome
        self._publish(sessions.reported(self.report, killed, problem, time.time()))
        users = ", ".join(self.users)
        if problem is not None:
            self.kill_clock = sessions.failed(self.kill_clock, self._clock(), lasting)
            if problem == self._logged:
                return
            self._logged = problem
            log.error(
                "%s: writer sessions: not closed %.1f s after it stopped being the writer "
                "(killed %d of %s): %s",
                self.name,
                after,
                killed,
                users,
                problem,
                extra={"node": self.name, "event": "writer_kill", "killed": killed},
            )
            return
        self._logged = None
        if killed == 0 and not self.kill_clock.lost:
            return  # a start beside a standby with nobody on it: nothing happened
        log.warning(
            "%s: writer sessions: killed %d session(s) of %s %.1f s after it stopped being "
            "the writer",
            self.name,
            killed,
            users,
            after,
            extra={"transition": True, "node": self.name, "event": "writer_kill", "killed": killed},
        )
