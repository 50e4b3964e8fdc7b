"""The writer lease's SQL, at the edge: one connection per node of its own, every statement under
a short deadline, each step of lease.py turned into one statement.

Why a connection of its own and not the health poll's (docs/architecture.md, "One writer"): a
lease write commits through replication, and while another member is frozen every commit in
the cluster waits until Galera evicts it (measured: an UPDATE blocked 3.2 s at
evs.suspect_timeout PT3S, max_statement_time did not stop it). On the poll's connection that
wait would delay the next health poll, or poison the connection it needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from mysql.connector import errorcode
from mysql.connector import errors as myerrors

from .config import LEASE_STATEMENT_TIMEOUT, NodeSettings, Timeouts
from .lease import (
    Acquire,
    Failure,
    HandOver,
    Identity,
    LeaseRow,
    Outcome,
    Read,
    Release,
    Renew,
    RequestHandover,
    Step,
)
from .session import Connector, OnSession, Session, classify_error, first_line, server_side

T = TypeVar("T")

SCHEMA = "galera_health"
TABLE = f"{SCHEMA}.writer_lease"
GRANT = f"CREATE, ALTER, SELECT, INSERT, UPDATE ON {SCHEMA}.*"
# Whether the row's holder is a member of this node's cluster (Galera 4 keeps the members with
# their gcomm UUIDs there): a lease that moves while its holder is none was written by
# something other than an agent (docs/architecture.md, "Who may write the lease").
MEMBERS = "mysql.wsrep_cluster_members"
MEMBERS_GRANT = f"SELECT ON {MEMBERS}"
GRANTS = (GRANT, MEMBERS_GRANT)
COLUMNS = (
    "holder, holder_id, priority, epoch, counter, next_holder, next_holder_id, next_priority, "
    "validity_ms"
)
# Added after the first release (docs/architecture.md, "Mixed settings"): a table created by an
# agent of that release lacks it, and the first agent of this one that reads adds it in place.
VALIDITY_COLUMN = "validity_ms INT UNSIGNED NOT NULL DEFAULT 0"
CREATE_SCHEMA = f"CREATE DATABASE IF NOT EXISTS {SCHEMA}"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    "id TINYINT UNSIGNED NOT NULL PRIMARY KEY, "
    "holder VARCHAR(64) NOT NULL DEFAULT '', "
    "holder_id VARCHAR(64) NOT NULL DEFAULT '', "
    "priority INT UNSIGNED NOT NULL DEFAULT 0, "
    "epoch BIGINT UNSIGNED NOT NULL DEFAULT 0, "
    "counter BIGINT UNSIGNED NOT NULL DEFAULT 0, "
    "next_holder VARCHAR(64) NOT NULL DEFAULT '', "
    "next_holder_id VARCHAR(64) NOT NULL DEFAULT '', "
    "next_priority INT UNSIGNED NOT NULL DEFAULT 0, "
    f"{VALIDITY_COLUMN}"
    ") ENGINE=InnoDB COMMENT='galera-health writer lease: one row, written by the agents'"
)
CREATE_ROW = f"INSERT IGNORE INTO {TABLE} (id) VALUES (1)"
# Idempotent, and harmless when several agents run it at once: DDL replicates in total order
# (TOI), and the second one finds the column and does nothing. Run only when a read misses it.
MIGRATE = f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {VALIDITY_COLUMN}"
# The node's own copy of the row, without wsrep_sync_wait: a version is applied here only after
# the statement that wrote it was sent, so a take-over clock started at its first sight is never
# early, and a decision made on a stale copy is refused by certification. A causal read would
# instead wait out a stalled cluster and see a renewal made just before the stall only after the
# eviction, restarting the clock then (docs/architecture.md, "One writer").
READ = (
    f"SELECT {COLUMNS}, holder_id = '' OR EXISTS (SELECT 1 FROM {MEMBERS} "
    f"WHERE node_uuid = holder_id) FROM {TABLE} WHERE id = 1"
)
NOBODY_NEXT = "next_holder = '', next_holder_id = '', next_priority = 0"
RENEW = (
    f"UPDATE {TABLE} SET counter = counter + 1, validity_ms = %s "
    "WHERE id = 1 AND holder_id = %s AND epoch = %s AND next_holder_id = ''"
)
ACQUIRE = (
    f"UPDATE {TABLE} SET holder = %s, holder_id = %s, priority = %s, epoch = epoch + 1, "
    f"counter = counter + 1, validity_ms = %s, {NOBODY_NEXT} "
    "WHERE id = 1 AND epoch = %s AND counter = %s"
)
RELEASE = (
    f"UPDATE {TABLE} SET holder = '', holder_id = '', priority = 0, counter = counter + 1, "
    f"validity_ms = 0, {NOBODY_NEXT} WHERE id = 1 AND holder_id = %s AND epoch = %s"
)
REQUEST = (
    f"UPDATE {TABLE} SET next_holder = %s, next_holder_id = %s, next_priority = %s "
    "WHERE id = 1 AND holder_id = %s AND epoch = %s AND next_holder_id = ''"
)
HAND_OVER = (
    f"UPDATE {TABLE} SET holder = next_holder, holder_id = next_holder_id, "
    f"priority = next_priority, epoch = epoch + 1, counter = counter + 1, validity_ms = 0, "
    f"{NOBODY_NEXT} "
    "WHERE id = 1 AND holder_id = %s AND epoch = %s AND next_holder_id = %s"
)
IDENTITY = (
    "SELECT @@GLOBAL.wsrep_node_name, (SELECT VARIABLE_VALUE FROM "
    "information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_GCOMM_UUID')"
)

NO_GRANT = frozenset(
    {
        errorcode.ER_DBACCESS_DENIED_ERROR,
        errorcode.ER_TABLEACCESS_DENIED_ERROR,
        errorcode.ER_COLUMNACCESS_DENIED_ERROR,
        errorcode.ER_SPECIFIC_ACCESS_DENIED_ERROR,
    }
)
MISSING = frozenset({errorcode.ER_BAD_DB_ERROR, errorcode.ER_NO_SUCH_TABLE})
ER_BAD_FIELD = errorcode.ER_BAD_FIELD_ERROR  # a table of the first release: migrate it
ER_LOCK_DEADLOCK = errorcode.ER_LOCK_DEADLOCK  # certification lost to a concurrent write
ER_LOCK_WAIT_TIMEOUT = errorcode.ER_LOCK_WAIT_TIMEOUT
ER_UNKNOWN_COM = errorcode.ER_UNKNOWN_COM_ERROR  # WSREP has not yet prepared node for use
ER_READ_ONLY = errorcode.ER_OPTION_PREVENTS_STATEMENT


def lease_timeouts(timeouts: Timeouts) -> Timeouts:
    """The lease connection's deadlines: connect like the poll, every statement 1 s (the
    driver's shortest), the server's max_statement_time just below it."""
    return Timeouts(
        connect=timeouts.connect,
        read=LEASE_STATEMENT_TIMEOUT,
        write=LEASE_STATEMENT_TIMEOUT,
        statement=0.9 * LEASE_STATEMENT_TIMEOUT,
    )


def classify(exc: BaseException, user: str, timeouts: Timeouts, connecting: bool) -> Failure:
    """One line per cause; a missing grant names the statement that fixes it. The lease's own
    errors first (grants, certification, ...), then session.classify_error's, reworded for
    the writer account and the lease deadline."""
    errno = getattr(exc, "errno", None) or 0
    if isinstance(exc, myerrors.Error) and errno in NO_GRANT:
        grants = "; ".join(f"GRANT {grant} TO '{user}'@'<host>'" for grant in GRANTS)
        return Failure("no_grant", f"the writer account may not use the lease: {grants}")
    if errno == ER_LOCK_DEADLOCK:
        return Failure("conflict", "lost to a concurrent write of the lease (certification)")
    if errno == ER_UNKNOWN_COM:
        return Failure("not_primary", "the node cannot commit: not in the Primary component")
    if errno == ER_READ_ONLY:
        return Failure("read_only", "the node is read-only")
    if errno == ER_LOCK_WAIT_TIMEOUT:
        return Failure("timeout", "the lease row stayed locked past the lease deadline")
    error = classify_error(exc, timeouts, connecting)
    if error.kind == "access_denied":
        return Failure(
            "access_denied",
            f"the writer account {user!r} was refused: check writer_user and its password "
            "(writer_password_file or GALERA_HEALTH_WRITER_PASSWORD)",
        )
    if error.kind == "timeout" and not connecting:
        return Failure(
            "timeout", f"a lease statement got no answer within {timeouts.read} s (lease deadline)"
        )
    return Failure(error.kind, first_line(error.detail))


class LeaseClient(OnSession):
    """Runs the steps of lease.py over the node's lease session (the writer account, the lease
    deadlines). Not thread-safe on purpose: only the node's lease job uses it."""

    def __init__(
        self,
        node: NodeSettings,
        connector: Connector | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = Session(
            node.address,
            node.writer_credentials,
            lease_timeouts(node.timeouts),
            node.tls,
            node.writer_interval,
            node.backoff_max,
            connector,
            clock,
        )
        self.priority = node.writer_priority
        self.validity = node.writer_validity
        self.identity: Identity | None = None
        self._last_failure: Failure | None = None  # the refused login a backoff waits out

    @property
    def interval(self) -> float:
        return self.session.interval

    def _setup(self, cursor: Any) -> Identity:
        cursor.execute(
            "SET SESSION wsrep_sync_wait = 0, innodb_lock_wait_timeout = 1, "
            f"max_statement_time = {self.timeouts.statement:g}"
        )
        cursor.execute(IDENTITY)
        row = cursor.fetchone()
        name, gcomm = (str(v) if v is not None else "" for v in (row or (None, None)))
        if not gcomm:
            raise myerrors.InterfaceError("the node has no Galera identity (wsrep_gcomm_uuid)")
        return Identity(
            name or self.address.name, gcomm, self.priority, round(self.validity * 1000)
        )

    def connect(self) -> Identity | Failure:
        """The node's identity over a working connection, or why there is none."""
        if self._last_failure is not None and self.session.retry_in() is not None:
            return self._last_failure
        if self.session.connected and self.identity is not None:
            return self.identity
        try:
            self.identity = self.session.open(self._setup)
        except Exception as exc:
            return self._failed(exc, connecting=True)
        self.session.note_success()
        self._last_failure = None
        return self.identity

    def run(self, step: Step) -> Outcome:
        """One step as one statement; never raises."""
        if not self.session.connected or self.identity is None:
            found = self.connect()
            if isinstance(found, Failure):
                return found
        try:
            return self._execute(step)
        except Exception as exc:
            return self._failed(exc, connecting=False)

    def use(self, work: Callable[[Any], T]) -> T | Failure:
        """Run `work` on the lease connection, under its deadlines (the old writer's session
        kill, sessions_sql.py); never raises, a failure is classified like a lease step's."""
        found = self.connect()
        if isinstance(found, Failure):
            return found
        try:
            return work(self.session.cursor)
        except Exception as exc:
            return self._failed(exc, connecting=False)

    def _execute(self, step: Step) -> Outcome:
        me, cursor = self.identity, self.session.cursor
        assert me is not None
        if isinstance(step, Read):
            return self._read(cursor)
        if isinstance(step, Renew):
            cursor.execute(RENEW, (me.validity_ms, me.id, step.epoch))
        elif isinstance(step, Acquire):
            row = step.row
            cursor.execute(
                ACQUIRE, (me.name, me.id, me.priority, me.validity_ms, row.epoch, row.counter)
            )
        elif isinstance(step, Release):
            cursor.execute(RELEASE, (me.id, step.epoch))
        elif isinstance(step, RequestHandover):
            row = step.row
            cursor.execute(REQUEST, (me.name, me.id, me.priority, row.holder_id, row.epoch))
        else:
            assert isinstance(step, HandOver)
            cursor.execute(HAND_OVER, (me.id, step.row.epoch, step.row.next_holder_id))
        return bool(cursor.rowcount == 1)

    def _read(self, cursor: Any) -> LeaseRow:
        try:
            cursor.execute(READ)
            found = cursor.fetchall()
        except myerrors.DatabaseError as exc:
            if exc.errno == ER_BAD_FIELD:
                cursor.execute(MIGRATE)  # a table of the first release; then read again
                cursor.execute(READ)
                found = cursor.fetchall()
            elif exc.errno in MISSING:
                found = []
            else:
                raise
        if not found:
            # First start of the first agent: create the table and the row (the DDL replicates
            # in total order; concurrent creators are harmless, IF NOT EXISTS / IGNORE).
            cursor.execute(CREATE_SCHEMA)
            cursor.execute(CREATE_TABLE)
            cursor.execute(CREATE_ROW)
            return LeaseRow()
        values = found[0]
        texts = [str(v) for v in values]
        return LeaseRow(
            holder=texts[0],
            holder_id=texts[1],
            priority=int(values[2]),
            epoch=int(values[3]),
            counter=int(values[4]),
            next_holder=texts[5],
            next_holder_id=texts[6],
            next_priority=int(values[7]),
            validity_ms=int(values[8]),
            holder_member=bool(values[9]),
        )

    def _failed(self, exc: BaseException, connecting: bool) -> Failure:
        failure = classify(exc, self.credentials.user, self.timeouts, connecting)
        if connecting or not server_side(exc):
            self.discard()
        if self.session.note_failure(failure.kind):
            self._last_failure = replace(failure, detail=f"{failure.detail} (retrying later)")
        return failure

    def discard(self) -> None:
        """Close without COM_QUIT: a stalled socket must not block the lease job again."""
        self.session.discard()

    close = discard
