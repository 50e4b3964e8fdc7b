"""One MySQL connection's life, shared by a node's health poll (probe.py) and its lease
(lease_sql.py): connect with every deadline set, close without COM_QUIT, back off where retrying
hurts the server, and name whatever the driver raised (docs/architecture.md, "One session class").

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
from typing import Any, Protocol, TypeVar

import mysql.connector
from mysql.connector import errorcode
from mysql.connector import errors as myerrors

from .config import ConfigError, Credentials, NodeAddress, Timeouts, Tls
from .facts import DRIVER_MODE
from .verdict import ProbeError

T = TypeVar("T")

# The driver logs its auth plugin choice at INFO on every connect: during a freeze that would be
# lines per reconnect. We log transitions, not connections.
logging.getLogger("mysql.connector").setLevel(logging.WARNING)

# MariaDB's "max_statement_time exceeded": the driver's errorcode lists MySQL's numbers only
# (MySQL's own statement timeout is ER_QUERY_TIMEOUT, 3024).
ER_STATEMENT_TIMEOUT = 1969
TOO_MANY = frozenset(
    {
        errorcode.ER_CON_COUNT_ERROR,
        errorcode.ER_TOO_MANY_USER_CONNECTIONS,
        errorcode.ER_USER_LIMIT_REACHED,
    }
)
AUTH_PLUGIN = frozenset(
    {errorcode.ER_NOT_SUPPORTED_AUTH_MODE, errorcode.CR_AUTH_PLUGIN_CANNOT_LOAD}
)
CONNECTION_LOST = frozenset({errorcode.CR_SERVER_LOST, errorcode.CR_SERVER_LOST_EXTENDED})
UNREACHABLE = frozenset(
    {errorcode.CR_CONNECTION_ERROR, errorcode.CR_CONN_HOST_ERROR, errorcode.CR_UNKNOWN_HOST}
)
GONE = CONNECTION_LOST | {errorcode.CR_SERVER_GONE_ERROR}


class Connection(Protocol):
    """The part of a driver connection a session uses (a test may stub it)."""

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
        if errno == errorcode.ER_ACCESS_DENIED_ERROR:
            return ProbeError(
                "access_denied",
                f"the agent's login was refused: {message}; check user and password",
            )
        if errno in TOO_MANY:
            return ProbeError(
                "too_many_connections",
                f"the agent could not get a connection: {message}; "
                "connect over the Unix socket or raise max_connections",
            )
        if errno in AUTH_PLUGIN or "authentication plugin" in message.lower():
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
        if errno == errorcode.ER_UNKNOWN_SYSTEM_VARIABLE:
            return ProbeError("unsupported_server", f"{message}: not a MariaDB Galera server")
        if errno == errorcode.ER_UNKNOWN_COM_ERROR:  # "WSREP has not yet prepared node ..."
            return ProbeError("not_ready", message)
        if errno in CONNECTION_LOST and timed_out_inside(exc):
            limit = timeouts.connect if connecting else timeouts.read
            return ProbeError(
                "timeout",
                f"no answer {step} within {limit} s ({first_line(message, 80)})",
                timed_out=True,
            )
        if errno == errorcode.CR_SSL_CONNECTION_ERROR or tls_failure(exc):
            return ProbeError(
                "tls_error",
                f"{message}; check ssl_ca / ssl_cert / ssl_key and the server's certificate",
            )
        if errno in UNREACHABLE:
            return ProbeError("unreachable", message)
        if errno in GONE:
            return ProbeError("unreachable", f"connection lost: {message}")
        return ProbeError("error", f"MySQL error {errno}: {message}" if errno else message)
    if isinstance(exc, ssl.SSLError):
        return ProbeError("tls_error", first_line(f"TLS: {exc}; check ssl_ca / ssl_cert / ssl_key"))
    if isinstance(exc, OSError):
        return ProbeError("unreachable", first_line(f"{exc.strerror or exc}"))
    return ProbeError("error", first_line(f"{type(exc).__name__}: {exc}"))


def server_side(exc: BaseException) -> bool:
    """An error the server answered with: the connection is still in step and can be kept.
    Anything else (a timeout, a lost socket) may have poisoned it: it is thrown away."""
    errno = getattr(exc, "errno", None) or 0
    return isinstance(exc, myerrors.DatabaseError) and 1000 <= errno < 2000


# The backoff doubles from at least this many seconds (2, 4, 8 s, ...), however short the poll
# interval: a faster interval is for fresher facts, not for more logins a server refuses.
BACKOFF_BASE = 1.0


def backoff_delay(failures: int, interval: float, backoff_max: float) -> float:
    """Seconds to wait after the `failures`-th refused login in a row (doubling, capped)."""
    return min(backoff_max, max(interval, BACKOFF_BASE) * 2.0**failures)


def backoff_kinds() -> frozenset[str]:
    """Errors where retrying every interval hurts the server or only fills its logs."""
    return frozenset({"access_denied", "too_many_connections", "auth_plugin_unsupported"})


def shutdown_quietly(connection: Any) -> None:
    """Close without COM_QUIT: a poisoned or stalled socket must not block us again; closing a
    broken socket may fail, and it is gone either way."""
    if connection is not None:
        with contextlib.suppress(Exception):
            connection.shutdown()


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


class Session:
    """One connection to one node, with one cursor for its life (the driver's cursor() pings
    the server each time it is called), and the backoff after refused logins. Its owner (the
    probe or the lease client) says what to run on it. Not thread-safe on purpose: one job uses
    it, never two at once."""

    def __init__(
        self,
        address: NodeAddress,
        credentials: Credentials,
        timeouts: Timeouts,
        tls: Tls,
        interval: float,
        backoff_max: float,
        connector: Connector | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.credentials = credentials
        self.timeouts = timeouts
        self.tls = tls
        self.interval = interval
        self.backoff_max = backoff_max
        self._connector: Connector = connector or mysql.connector.connect
        self._clock = clock
        self._connection: Connection | None = None
        self.cursor: Any = None  # None while there is no connection
        self._failures_in_backoff = 0
        self._backing_off = False
        self._retry_at = 0.0

    @property
    def connected(self) -> bool:
        return self.cursor is not None

    def open(self, setup: Callable[[Any], T]) -> T:
        """Connect and run `setup` on the new cursor (the session's SETs and first read); if
        anything fails the new connection is closed and the error raised for classify()."""
        connection = self._connector(
            **connect_arguments(self.address, self.credentials, self.timeouts, self.tls)
        )
        try:
            cursor = connection.cursor()
            found = setup(cursor)
        except BaseException:
            shutdown_quietly(connection)
            raise
        self._connection, self.cursor = connection, cursor
        return found

    def discard(self) -> None:
        """Close without COM_QUIT (see shutdown_quietly); the next use connects again."""
        connection, self._connection, self.cursor = self._connection, None, None
        shutdown_quietly(connection)

    close = discard

    def classify(self, exc: BaseException, connecting: bool) -> ProbeError:
        return classify_error(exc, self.timeouts, connecting)

    def retry_in(self) -> float | None:
        """Seconds until a login may be tried again after refused ones, None when it may now."""
        if not self._backing_off:
            return None
        wait = self._retry_at - self._clock()
        return wait if wait > 0 else None

    def note_failure(self, kind: str) -> bool:
        """Count a failure of this kind; True when it (re)starts a backoff. Refused or timed
        out: retried every interval, so the node returns as soon as it can."""
        if kind in backoff_kinds():
            self._failures_in_backoff += 1
            delay = backoff_delay(self._failures_in_backoff, self.interval, self.backoff_max)
            self._retry_at = self._clock() + delay
            self._backing_off = True
            return True
        self.note_success()
        return False

    def note_success(self) -> None:
        self._failures_in_backoff = 0
        self._backing_off = False


class OnSession:
    """What an owner of a session (the health probe, the lease client) shows of it: the node,
    the account and the deadlines it was built from, read by the poller, logs and tests."""

    session: Session

    @property
    def address(self) -> NodeAddress:
        return self.session.address

    @property
    def credentials(self) -> Credentials:
        return self.session.credentials

    @property
    def timeouts(self) -> Timeouts:
        return self.session.timeouts
