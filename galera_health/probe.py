"""One poll of one node over its one persistent connection (a session.Session: every step
under a deadline, closed after any error, backoff after refused logins)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mysql.connector import errorcode
from mysql.connector import errors as myerrors

from .config import Credentials, NodeAddress, NodeSettings, Timeouts, Tls
from .facts import STATUS_NAMES, VARIABLE_NAMES
from .session import Connector, OnSession, Session
from .verdict import Observation, ProbeError, Snapshot


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{n.upper()}'" for n in names)


# One round trip for the whole picture. information_schema is readable by a USAGE-only user,
# also on a node that is not ready.
POLL_QUERY = (
    "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
    f"WHERE VARIABLE_NAME IN ({_names(STATUS_NAMES)}) "
    "UNION ALL "
    "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES "
    f"WHERE VARIABLE_NAME IN ({_names(VARIABLE_NAMES)})"
)


class NodeProbe(OnSession):
    """Owns the health poll's session to one node. Not thread-safe on purpose: the scheduler
    never runs two polls of one node at once, so one connection per node is a fact, not a
    hope."""

    def __init__(
        self,
        address: NodeAddress,
        credentials: Credentials,
        timeouts: Timeouts,
        interval: float,
        backoff_max: float,
        connector: Connector | None = None,
        clock: Callable[[], float] = time.monotonic,
        tls: Tls | None = None,
    ) -> None:
        self.session = Session(
            address, credentials, timeouts, tls or Tls(), interval, backoff_max, connector, clock
        )
        self._provider_options: str | None = None
        self._last_error: ProbeError | None = None  # the refused login a backoff waits out

    def _setup(self, cursor: Any) -> str | None:
        # A global wsrep_sync_wait would make SHOW STATUS wait (error 1205); a client read
        # timeout does not stop the server's work, max_statement_time does.
        cursor.execute(
            "SET SESSION wsrep_sync_wait = 0, SESSION max_statement_time = "
            f"{self.timeouts.statement:g}"
        )
        cursor.execute("SELECT @@GLOBAL.wsrep_provider_options")
        row = cursor.fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def _query(self, cursor: Any) -> Snapshot:
        cursor.execute(POLL_QUERY)
        rows = cursor.fetchall()
        if not rows:
            # A connection that timed out once can answer [] without raising: never trust it.
            raise myerrors.InterfaceError("the status query returned no rows")
        facts = {str(name).lower(): str(value) for name, value in rows}
        return Snapshot(facts=facts, provider_options=self._provider_options)

    def poll(self) -> Observation:
        """Never raises; never leaves a connection behind that failed once."""
        session = self.session
        wait = session.retry_in()
        if self._last_error is not None and wait is not None:
            return ProbeError(
                self._last_error.kind, f"{self._last_error.detail} (next try in {wait:.0f} s)"
            )
        connecting = not session.connected
        try:
            if not session.connected:
                self._provider_options = session.open(self._setup)
                connecting = False
            snapshot = self._query(session.cursor)
        except Exception as exc:  # the probe must turn every failure into a verdict
            session.discard()
            error = session.classify(exc, connecting)
            self._last_error = error if session.note_failure(error.kind) else None
            return error
        session.note_success()
        self._last_error = None
        return snapshot

    def kill_client_sessions(self) -> tuple[int, ProbeError | None]:
        """Kill the node's client sessions after the LB took it out: the Azure LB does not cut
        established connections. Needs CONNECTION ADMIN; spares system threads, replication,
        root and ourselves. Runs over the node's one connection, under the same deadlines."""
        cursor = self.session.cursor
        if cursor is None:
            return 0, ProbeError("unreachable", "no connection to kill sessions over")
        killed = 0
        try:
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
                "AND USER NOT IN ('system user', 'event_scheduler', 'root', %s) "
                "AND COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Slave_IO', 'Slave_SQL', "
                "'Slave_worker')",
                (self.credentials.user,),
            )
            for (session,) in cursor.fetchall():
                try:
                    cursor.execute(f"KILL CONNECTION {int(session)}")
                    killed += 1
                except myerrors.DatabaseError as exc:
                    if exc.errno != errorcode.ER_NO_SUCH_THREAD:  # it ended by itself meanwhile
                        raise
        except Exception as exc:
            error = self.session.classify(exc, connecting=False)
            if error.timed_out or error.kind == "unreachable":
                self.discard()
            return killed, error
        return killed, None

    def discard(self) -> None:
        """Close without COM_QUIT (session.shutdown_quietly)."""
        self.session.discard()

    close = discard


def probe_for(node: NodeSettings, factory: Callable[..., NodeProbe] = NodeProbe) -> NodeProbe:
    """A node's probe built from its settings (the poller and `check` share it)."""
    return factory(
        node.address,
        node.credentials,
        node.timeouts,
        node.interval,
        node.backoff_max,
        tls=node.tls,
    )
