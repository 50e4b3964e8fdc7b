"""A database client workload through the load balancer: what an application lives with.

One thread per target (an LB listener) opens a NEW connection per transaction, reads
(`SELECT @@wsrep_node_name`) and inserts one row (autocommit), each step under a 2 s deadline,
and records every outcome: when, how long, which node answered, ok or the error code, and whether
the insert was acknowledged. :func:`attribute` adds the server HAProxy chose for each
transaction from its session log (a failed connection never tells the client which node it
was), and :func:`missing_acks` lists acknowledged inserts the cluster does not have.

:class:`Pool` is the other kind of client: long-lived pooled connections that a load balancer
never moves (it only chooses for new ones), updating hot rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mysql.connector

from testkit.haproxy import HAProxy, Session

DATABASE = "lb_workload"
TABLE = f"{DATABASE}.acks"
Query = Callable[[str], list[list[str]]]


@dataclass(frozen=True)
class Outcome:
    target: str  # the listener the client connected to
    seq: int
    started: float  # epoch seconds
    seconds: float
    node: str | None  # @@wsrep_node_name, when the read answered
    error: str | None  # None: both statements ok; else the MySQL error number or "timeout"
    step: str  # the step that failed ("connect", "read", "insert"), "" when ok
    acked: bool  # the insert was acknowledged (committed)
    server: str | None = None  # HAProxy's choice, from its log (see attribute())
    accepted: float | None = None  # when HAProxy accepted the connection (epoch, ms)

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        via = self.server or self.node or "?"
        what = "ok" if self.ok else f"{self.step}: {self.error}"
        return (
            f"{self.target}#{self.seq} at {self.started:.3f} via {via}"
            f" ({self.seconds:.2f} s) {what}"
        )


class WorkloadError(AssertionError):
    pass


def prepare(queries: Sequence[Query], user: str, password: str, timeout: float = 60.0) -> None:
    """The table and an account for the client (SELECT, INSERT only), on every node."""
    queries[0](
        f"CREATE DATABASE IF NOT EXISTS {DATABASE}; "
        f"CREATE TABLE IF NOT EXISTS {TABLE} (run VARCHAR(40) NOT NULL,"
        " target VARCHAR(40) NOT NULL, seq INT NOT NULL, node VARCHAR(64),"
        " PRIMARY KEY (run, target, seq)); "
        f"CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
        f"GRANT SELECT, INSERT ON {DATABASE}.* TO '{user}'@'127.0.0.1'"
    )
    # DDL replicates in total order; every node must have it before a client can land there.
    check = (
        f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='{DATABASE}';"
        f" SELECT COUNT(*) FROM mysql.global_priv WHERE User='{user}'"
    )
    deadline = time.monotonic() + timeout
    for query in queries:
        while [row[0] for row in query(check)] != ["1", "1"]:
            if time.monotonic() > deadline:
                raise WorkloadError(f"the workload's table or account did not replicate: {check}")
            time.sleep(0.1)


class Workload:
    """`with Workload(...) as load:` ... `load.outcomes()`; stops its threads on exit."""

    def __init__(
        self,
        targets: Mapping[str, tuple[str, int]],
        user: str,
        password: str,
        period: float = 0.1,
        deadline: int = 2,
    ) -> None:
        self.targets = dict(targets)
        self.user = user
        self.password = password
        self.period = period
        self.deadline = deadline
        self.run = f"{time.strftime('%H%M%S')}-{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._threads = [
            threading.Thread(target=self._loop, args=(name,), name=f"workload-{name}", daemon=True)
            for name in self.targets
        ]

    def start(self) -> Workload:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=3 * self.deadline + 5)
        return self.outcomes()

    def __enter__(self) -> Workload:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def wait_served(self, count: int, timeout: float = 30.0) -> None:
        """Until every target has `count` more successful transactions than now."""
        start = {name: self._ok_count(name) for name in self.targets}
        deadline = time.monotonic() + timeout
        while any(self._ok_count(name) < start[name] + count for name in self.targets):
            if time.monotonic() > deadline:
                raise WorkloadError(
                    f"fewer than {count} successful transactions per target in {timeout} s: "
                    + "; ".join(o.describe() for o in self.outcomes()[-6:])
                )
            time.sleep(0.05)

    def _ok_count(self, target: str) -> int:
        with self._lock:
            return sum(1 for o in self._outcomes if o.target == target and o.ok)

    def _loop(self, target: str) -> None:
        host, port = self.targets[target]
        seq = 0
        while not self._stop.is_set():
            began = time.monotonic()
            outcome = self._transaction(target, host, port, seq)
            with self._lock:
                self._outcomes.append(outcome)
            seq += 1
            self._stop.wait(max(0.0, self.period - (time.monotonic() - began)))

    def _transaction(self, target: str, host: str, port: int, seq: int) -> Outcome:
        started, began = time.time(), time.monotonic()
        node: str | None = None
        step = "connect"
        connection = None
        try:
            connection = mysql.connector.connect(
                host=host,
                port=port,
                user=self.user,
                password=self.password,
                use_pure=True,
                autocommit=True,
                connection_timeout=self.deadline,
                read_timeout=self.deadline,
                write_timeout=self.deadline,
            )
            cursor = connection.cursor()
            step = "read"
            cursor.execute("SELECT @@wsrep_node_name")
            row = cursor.fetchone()
            node = str(row[0]) if isinstance(row, tuple) and row else None
            step = "insert"
            cursor.execute(
                f"INSERT INTO {TABLE} (run, target, seq, node) VALUES (%s, %s, %s, %s)",
                (self.run, target, seq, node),
            )
            cursor.close()
            error: str | None = None
            step = ""
        except Exception as exc:  # every failure is an outcome, never a dead thread
            error = _code(exc)
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()
        return Outcome(
            target=target,
            seq=seq,
            started=started,
            seconds=time.monotonic() - began,
            node=node,
            error=error,
            step=step,
            acked=error is None,
        )


def _code(exc: BaseException) -> str:
    text = str(exc).lower()
    if "timed out" in text or isinstance(exc, TimeoutError):
        return "timeout"
    errno = getattr(exc, "errno", None)
    if isinstance(errno, int) and errno > 0:
        return str(errno)
    return type(exc).__name__


def attribute(outcomes: Sequence[Outcome], sessions: Iterable[Session]) -> list[Outcome]:
    """Each outcome with the server HAProxy chose for it.

    One thread per listener, one connection per transaction, so a listener's sessions in
    HAProxy's accept order are its transactions in order. Checked, not assumed: the counts
    must match, and every transaction that read its node must have been sent to that node.
    """
    by_listener: dict[str, list[Session]] = {}
    for session in sorted(sessions, key=lambda s: s.counter):
        by_listener.setdefault(session.listener, []).append(session)
    result: list[Outcome] = []
    for target in sorted({o.target for o in outcomes}):
        mine = sorted((o for o in outcomes if o.target == target), key=lambda o: o.seq)
        logged = by_listener.get(target, [])
        if len(logged) != len(mine):
            raise WorkloadError(
                f"{target}: {len(mine)} transactions but {len(logged)} HAProxy sessions"
            )
        for outcome, session in zip(mine, logged, strict=True):
            if outcome.node is not None and outcome.node != session.server:
                raise WorkloadError(
                    f"{target}#{outcome.seq}: answered by {outcome.node} but HAProxy logged"
                    f" {session.server}: the session log and the transactions are out of step"
                )
            result.append(
                dataclasses.replace(outcome, server=session.server, accepted=session.accepted)
            )
    return result


def wait_logged(
    outcomes: Sequence[Outcome], lb: HAProxy, since: int, timeout: float = 30.0
) -> list[Session]:
    """HAProxy logs a session when it ends: wait until every transaction's session is there
    (the workload's sessions are those from `since`, `lb.next_counter()` read before it began).
    A shortfall names HAProxy's dropped log lines, to tell a lost line from a session still open."""
    wanted: dict[str, int] = {}
    for outcome in outcomes:
        wanted[outcome.target] = wanted.get(outcome.target, 0) + 1
    deadline = time.monotonic() + timeout
    while True:
        logged = lb.sessions(since)
        counts: dict[str, int] = {}
        for session in logged:
            counts[session.listener] = counts.get(session.listener, 0) + 1
        if all(counts.get(target, 0) >= n for target, n in wanted.items()):
            return logged
        if time.monotonic() > deadline:
            raise WorkloadError(
                f"HAProxy logged {counts} sessions, the workload made {wanted}; HAProxy dropped"
                f" {lb.dropped_logs()} log lines"
            )
        time.sleep(0.1)


def missing_acks(outcomes: Sequence[Outcome], run: str, query: Query) -> list[Outcome]:
    """Acknowledged inserts that `query`'s node does not have (read with wsrep_sync_wait, so
    everything the cluster committed before is visible)."""
    rows = query(
        f"SET SESSION wsrep_sync_wait = 1; SELECT target, seq FROM {TABLE} WHERE run = '{run}'"
    )
    present = {(row[0], int(row[1])) for row in rows if len(row) == 2}
    return [o for o in outcomes if o.acked and (o.target, o.seq) not in present]


def summary(outcomes: Sequence[Outcome]) -> str:
    """Per target: transactions, failures, and failures by server and error."""
    lines = []
    for target in sorted({o.target for o in outcomes}):
        mine = [o for o in outcomes if o.target == target]
        failed = [o for o in mine if not o.ok]
        kinds: dict[str, int] = {}
        for o in failed:
            key = f"{o.server or '?'}:{o.step}:{o.error}"
            kinds[key] = kinds.get(key, 0) + 1
        served: dict[str, int] = {}
        for o in mine:
            if o.ok:
                served[o.node or "?"] = served.get(o.node or "?", 0) + 1
        lines.append(
            f"{target}: {len(mine)} transactions, {len(failed)} failed {kinds or ''}"
            f" served by {dict(sorted(served.items()))}"
        )
    return "\n".join(lines)


# --- pooled, long-lived clients ------------------------------------------------------------

HOT_DATABASE = "pool_hot"
HOT_TABLE = f"{HOT_DATABASE}.hot"


def prepare_hot(query: Query, user: str, password: str, rows: int) -> None:
    """The hot rows and a client account with the right to update them (on the host 127.0.0.1:
    the load balancer's side of the connection)."""
    query(
        f"CREATE DATABASE IF NOT EXISTS {HOT_DATABASE}; "
        f"CREATE TABLE IF NOT EXISTS {HOT_TABLE} (id INT PRIMARY KEY, v BIGINT NOT NULL); "
        f"INSERT IGNORE INTO {HOT_TABLE} VALUES "
        + ", ".join(f"({i}, 0)" for i in range(1, rows + 1))
        + f"; CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
        f"GRANT SELECT, UPDATE ON {HOT_DATABASE}.* TO '{user}'@'127.0.0.1'"
    )


@dataclass(frozen=True)
class PoolResult:
    worker: int
    started: float  # monotonic, when the transaction began
    ended: float  # monotonic, when COMMIT answered (or the error came)
    node: str | None  # the node the connection is on (read once, when it connected)
    error: str | None  # None: committed; else the MySQL error number, "timeout", ...

    @property
    def ok(self) -> bool:
        return self.error is None


class Pool:
    """A connection pool as an application runs one: `workers` threads, each with ONE
    long-lived connection through the load balancer, reconnecting only after an error (the
    load balancer then chooses again). Each transaction updates two of `rows` hot rows in key
    order (so on one node they wait for each other's locks; a 1213 is a certification conflict
    between two nodes), every step under a 2 s deadline. `recycle`: a connection is closed
    after that many transactions (a pool's maximum lifetime; such clients follow the load
    balancer soon, the others never), None: never."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        workers: int = 4,
        rows: int = 3,
        recycle: int | None = None,
    ) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password
        self.rows = rows
        self.recycle = recycle
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._results: list[PoolResult] = []
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"pool-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> Pool:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[PoolResult]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        return self.results()

    def __enter__(self) -> Pool:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def results(self) -> list[PoolResult]:
        with self._lock:
            return list(self._results)

    def wait_committed(self, count: int, timeout: float = 30.0) -> None:
        """Until `count` more transactions committed than now."""
        start = sum(1 for r in self.results() if r.ok)
        deadline = time.monotonic() + timeout
        while sum(1 for r in self.results() if r.ok) < start + count:
            if time.monotonic() > deadline:
                raise WorkloadError(
                    f"fewer than {count} commits in {timeout} s: {self.results()[-4:]}"
                )
            time.sleep(0.05)

    def _connect(self) -> tuple[Any, str | None]:
        connection = mysql.connector.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            use_pure=True,
            autocommit=False,
            connection_timeout=2,
            read_timeout=2,
            write_timeout=2,
        )
        cursor = connection.cursor()
        cursor.execute("SELECT @@wsrep_node_name")
        row = cursor.fetchone()
        connection.commit()
        return connection, str(row[0]) if isinstance(row, tuple) and row else None

    def _loop(self, worker: int) -> None:
        chooser = random.Random(worker)
        connection: Any = None
        node: str | None = None
        uses = 0
        while not self._stop.is_set():
            began = time.monotonic()
            error: str | None = None
            try:
                if connection is None:
                    connection, node = self._connect()
                    uses = 0
                first, second = sorted(chooser.sample(range(1, self.rows + 1), 2))
                cursor = connection.cursor()
                cursor.execute(f"UPDATE {HOT_TABLE} SET v = v + 1 WHERE id = %s", (first,))
                cursor.execute(f"UPDATE {HOT_TABLE} SET v = v + 1 WHERE id = %s", (second,))
                connection.commit()
            except Exception as exc:  # every failure is a result, never a dead thread
                error = _code(exc)
            with self._lock:
                self._results.append(PoolResult(worker, began, time.monotonic(), node, error))
            uses += 1
            if error is None and (self.recycle is None or uses < self.recycle):
                continue
            if error == "1213" and connection is not None:
                with contextlib.suppress(Exception):  # a certification failure: still usable
                    connection.rollback()
                    continue
            if connection is not None:
                with contextlib.suppress(Exception):  # a broken one without COM_QUIT
                    connection.close() if error is None else connection.shutdown()
            connection, node = None, None
            if error is not None:
                self._stop.wait(0.05)  # a refused connection must not spin
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
