"""One poll of one node over its one persistent connection, every step under a deadline.

The driver is mysql-connector-python in pure-Python mode (facts.DRIVER_MODE says why).
With connection_timeout, read_timeout and write_timeout all set, every stall we know (no greeting,
stalled auth, frozen server, blackholed address, stalled query) ends in bounded time.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

import mysql.connector
from mysql.connector import errors as myerrors

from .config import ConfigError, Credentials, NodeAddress, NodeSettings, Timeouts, Tls
from .facts import DRIVER_MODE, STATUS_NAMES, VARIABLE_NAMES
from .verdict import Observation, ProbeError, Snapshot

# The driver logs its auth plugin choice at INFO on every connect: during a freeze that would be
# lines per reconnect. We log transitions, not connections.
logging.getLogger("mysql.connector").setLevel(logging.WARNING)


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

# MySQL error numbers we give a name to.
ER_CON_COUNT_ERROR = 1040
ER_ACCESS_DENIED_ERROR = 1045
ER_UNKNOWN_COM_ERROR = 1047  # "WSREP has not yet prepared node for application use"
ER_UNKNOWN_SYSTEM_VARIABLE = 1193
ER_TOO_MANY_USER_CONNECTIONS = 1203
ER_USER_LIMIT_REACHED = 1226
ER_NOT_SUPPORTED_AUTH_MODE = 1251
ER_STATEMENT_TIMEOUT = 1969
ER_NO_SUCH_THREAD = 1094
CR_CONNECTION_ERROR = 2002
CR_CONN_HOST_ERROR = 2003
CR_UNKNOWN_HOST = 2005
CR_SERVER_GONE_ERROR = 2006
CR_SERVER_LOST = 2013
CR_AUTH_PLUGIN_CANNOT_LOAD = 2059
CR_SERVER_LOST_EXTENDED = 2055
CR_SSL_CONNECTION_ERROR = 2026


class Connection(Protocol):
    """The part of a driver connection the probe uses (a test may stub it)."""

    def cursor(self) -> Any: ...

    def shutdown(self) -> None: ...


Connector = Callable[..., Connection]


def first_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def chain(exc: BaseException) -> list[BaseException]:
    """The exception and what it was raised from: the driver wraps socket and TLS failures
    as a lost connection (2055) whose text or cause says what really happened."""
    found: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(found) < 5:
        found.append(seen)
        seen = seen.__cause__ or seen.__context__
    return found


def timed_out_inside(exc: BaseException) -> bool:
    return any(isinstance(e, TimeoutError) or "timed out" in str(e) for e in chain(exc))


def tls_failure(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLError) or "[SSL" in str(e) for e in chain(exc))


def classify_error(exc: BaseException, timeouts: Timeouts, connecting: bool) -> ProbeError:
    """Turn whatever the driver raised into a stable kind and one line for an operator."""
    step = "while connecting" if connecting else "to the status query"
    if isinstance(exc, myerrors.ConnectionTimeoutError):
        return ProbeError(
            "timeout",
            f"no answer while connecting within {timeouts.connect} s "
            "(TCP connect, greeting, TLS or auth stalled)",
            timed_out=True,
        )
    if isinstance(exc, (myerrors.ReadTimeoutError, TimeoutError)):
        limit = timeouts.connect if connecting else timeouts.read
        return ProbeError("timeout", f"no answer {step} within {limit} s", timed_out=True)
    if isinstance(exc, myerrors.WriteTimeoutError):
        limit = timeouts.connect if connecting else timeouts.write
        return ProbeError("timeout", f"could not send {step} within {limit} s", timed_out=True)
    if isinstance(exc, ConfigError):
        return ProbeError("config_error", str(exc))
    if isinstance(exc, myerrors.Error):
        errno = exc.errno or 0
        message = first_line(exc.msg or str(exc))
        if errno == ER_ACCESS_DENIED_ERROR:
            return ProbeError(
                "access_denied",
                f"the agent's login was refused: {message}; check user and password",
            )
        if errno in (ER_CON_COUNT_ERROR, ER_TOO_MANY_USER_CONNECTIONS, ER_USER_LIMIT_REACHED):
            return ProbeError(
                "too_many_connections",
                f"the agent could not get a connection: {message}; "
                "connect over the Unix socket or raise max_connections",
            )
        if errno in (ER_NOT_SUPPORTED_AUTH_MODE, CR_AUTH_PLUGIN_CANNOT_LOAD) or (
            "authentication plugin" in message.lower()
        ):
            return ProbeError(
                "auth_plugin_unsupported",
                f"{message}; give the monitor account mysql_native_password "
                "(the driver has no ed25519 or PARSEC support)",
            )
        if errno == ER_STATEMENT_TIMEOUT:
            return ProbeError(
                "timeout",
                f"the server stopped the status query at max_statement_time "
                f"{timeouts.statement:g} s",
                timed_out=True,
            )
        if errno == ER_UNKNOWN_SYSTEM_VARIABLE:
            return ProbeError("unsupported_server", f"{message}: not a MariaDB Galera server")
        if errno == ER_UNKNOWN_COM_ERROR:
            return ProbeError("not_ready", message)
        if errno in (CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED) and timed_out_inside(exc):
            limit = timeouts.connect if connecting else timeouts.read
            return ProbeError(
                "timeout",
                f"no answer {step} within {limit} s ({first_line(message, 80)})",
                timed_out=True,
            )
        if errno == CR_SSL_CONNECTION_ERROR or tls_failure(exc):
            return ProbeError(
                "tls_error",
                f"{message}; check ssl_ca / ssl_cert / ssl_key and the server's certificate",
            )
        if errno in (CR_CONNECTION_ERROR, CR_CONN_HOST_ERROR, CR_UNKNOWN_HOST):
            return ProbeError("unreachable", message)
        if errno in (CR_SERVER_GONE_ERROR, CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED):
            return ProbeError("unreachable", f"connection lost: {message}")
        return ProbeError("error", f"MySQL error {errno}: {message}" if errno else message)
    if isinstance(exc, ssl.SSLError):
        return ProbeError("tls_error", first_line(f"TLS: {exc}; check ssl_ca / ssl_cert / ssl_key"))
    if isinstance(exc, OSError):
        return ProbeError("unreachable", first_line(f"{exc.strerror or exc}"))
    return ProbeError("error", first_line(f"{type(exc).__name__}: {exc}"))


# The backoff doubles from at least this many seconds (2, 4, 8 s, ...), however short the poll
# interval: a faster interval is for fresher facts, not for more logins a server refuses.
BACKOFF_BASE = 1.0


def backoff_delay(failures: int, interval: float, backoff_max: float) -> float:
    """Seconds to wait after the `failures`-th refused login in a row (doubling, capped)."""
    return min(backoff_max, max(interval, BACKOFF_BASE) * 2.0**failures)


def shutdown_quietly(connection: Any) -> None:
    """Close without COM_QUIT: a poisoned or stalled socket must not block us again; closing a
    broken socket may fail, and it is gone either way."""
    if connection is not None:
        with contextlib.suppress(Exception):
            connection.shutdown()


def backoff_kinds() -> frozenset[str]:
    """Errors where retrying every interval hurts the server or only fills its logs."""
    return frozenset({"access_denied", "too_many_connections", "auth_plugin_unsupported"})


def connect_arguments(
    address: NodeAddress, credentials: Credentials, timeouts: Timeouts, tls: Tls
) -> dict[str, Any]:
    """The driver's arguments for one connection to a node, every deadline set."""
    arguments: dict[str, Any] = {
        "user": credentials.user,
        "password": credentials.password(),
        "connection_timeout": timeouts.connect,
        "read_timeout": timeouts.read,
        "write_timeout": timeouts.write,
        "use_pure": DRIVER_MODE == "pure",
        "autocommit": True,
        "allow_local_infile": False,
        "conn_attrs": {"program_name": "galera-health"},
    }
    if tls.ca is not None:
        arguments["ssl_ca"] = tls.ca
        arguments["ssl_verify_cert"] = True
        arguments["ssl_verify_identity"] = tls.verify_identity
    if tls.cert is not None:
        arguments["ssl_cert"] = tls.cert
        arguments["ssl_key"] = tls.key
    if address.unix_socket is not None:
        arguments["unix_socket"] = address.unix_socket
    else:
        arguments["host"] = address.host
        arguments["port"] = address.port
    return arguments


class NodeProbe:
    """Owns the connection to one node. Not thread-safe on purpose: the scheduler never runs
    two polls of one node at once, so one connection per node is a fact, not a hope."""

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
        self.address = address
        self.tls = tls or Tls()
        self.credentials = credentials
        self.timeouts = timeouts
        self.interval = interval
        self.backoff_max = backoff_max
        self._connector: Connector = connector or mysql.connector.connect
        self._clock = clock
        self._connection: Connection | None = None
        self._cursor: Any = None
        self._provider_options: str | None = None
        self._failures_in_backoff = 0
        self._retry_at = 0.0
        self._last_error: ProbeError | None = None

    def _connect_arguments(self) -> dict[str, Any]:
        return connect_arguments(self.address, self.credentials, self.timeouts, self.tls)

    def _open(self) -> tuple[Connection, Any]:
        connection = self._connector(**self._connect_arguments())
        try:
            # One cursor for the connection's life: the driver's cursor() pings the server each
            # time it is called, which would double the round trips of every poll.
            cursor = connection.cursor()
            # A global wsrep_sync_wait would make SHOW STATUS wait (error 1205); a client read
            # timeout does not stop the server's work, max_statement_time does.
            cursor.execute(
                "SET SESSION wsrep_sync_wait = 0, SESSION max_statement_time = "
                f"{self.timeouts.statement:g}"
            )
            cursor.execute("SELECT @@GLOBAL.wsrep_provider_options")
            row = cursor.fetchone()
        except BaseException:
            connection.shutdown()
            raise
        self._provider_options = str(row[0]) if row and row[0] is not None else None
        return connection, cursor

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
        now = self._clock()
        if self._last_error is not None and now < self._retry_at:
            wait = self._retry_at - now
            return ProbeError(
                self._last_error.kind, f"{self._last_error.detail} (next try in {wait:.0f} s)"
            )
        connecting = self._connection is None
        try:
            if self._connection is None:
                self._connection, self._cursor = self._open()
                connecting = False
            snapshot = self._query(self._cursor)
        except Exception as exc:  # the probe must turn every failure into a verdict
            self.discard()
            error = classify_error(exc, self.timeouts, connecting)
            self._note_failure(error)
            return error
        self._failures_in_backoff = 0
        self._last_error = None
        return snapshot

    def _note_failure(self, error: ProbeError) -> None:
        if error.kind in backoff_kinds():
            self._failures_in_backoff += 1
            delay = backoff_delay(self._failures_in_backoff, self.interval, self.backoff_max)
            self._retry_at = self._clock() + delay
            self._last_error = error
        else:
            # Refused or timed out: retry every interval so the node returns as soon as it can.
            self._failures_in_backoff = 0
            self._last_error = None

    def kill_client_sessions(self) -> tuple[int, ProbeError | None]:
        """Kill the node's client sessions after the LB took it out: the Azure LB does not cut
        established connections. Needs CONNECTION ADMIN; spares system threads, replication,
        root and ourselves. Runs over the node's one connection, under the same deadlines."""
        if self._cursor is None:
            return 0, ProbeError("unreachable", "no connection to kill sessions over")
        killed = 0
        try:
            self._cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
                "AND USER NOT IN ('system user', 'event_scheduler', 'root', %s) "
                "AND COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Slave_IO', 'Slave_SQL', "
                "'Slave_worker')",
                (self.credentials.user,),
            )
            for (session,) in self._cursor.fetchall():
                try:
                    self._cursor.execute(f"KILL CONNECTION {int(session)}")
                    killed += 1
                except myerrors.DatabaseError as exc:
                    if exc.errno != ER_NO_SUCH_THREAD:  # it ended by itself meanwhile
                        raise
        except Exception as exc:
            error = classify_error(exc, self.timeouts, connecting=False)
            if error.timed_out or error.kind == "unreachable":
                self.discard()
            return killed, error
        return killed, None

    def discard(self) -> None:
        """Close without COM_QUIT (see shutdown_quietly)."""
        connection, self._connection, self._cursor = self._connection, None, None
        shutdown_quietly(connection)

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
