"""Fakes the unit tests share: a probe that answers from a script, a stub MySQL driver
(and SYNCED, re-exported from tests/samples.py).

A module of its own, so that test modules import from it rather than from each other.
"""

from __future__ import annotations

from typing import Any

from galera_health.probe import POLL_QUERY
from galera_health.verdict import Observation, ProbeError

from ..samples import SYNCED

__all__ = ["ROWS", "SYNCED", "FakeProbe", "StubConnection", "StubCursor", "StubDriver"]


class FakeProbe:
    """Stands in for NodeProbe in the poller: answers each poll with the next scripted
    observation (the last one repeats), and records closes and kills."""

    def __init__(self, *observations: Observation) -> None:
        self.observations = list(observations)
        self.polls = 0
        self.closed = False
        self.killed: list[int] = []
        self.kill_error: ProbeError | None = None

    def poll(self) -> Observation:
        self.polls += 1
        if len(self.observations) > 1:
            return self.observations.pop(0)
        return self.observations[0]

    def close(self) -> None:
        self.closed = True

    def kill_client_sessions(self) -> tuple[int, ProbeError | None]:
        self.killed.append(self.polls)
        return (0 if self.kill_error else 2), self.kill_error


# The driver boundary of NodeProbe (mysql.connector.connect and its connection and cursor).
ROWS = [("WSREP_CLUSTER_STATUS", "Primary"), ("WSREP_ON", "ON")]


class StubCursor:
    def __init__(self, connection: StubConnection) -> None:
        self.connection = connection
        self.result: list[tuple[Any, ...]] = []

    def execute(self, statement: str) -> None:
        self.connection.statements.append(statement)
        failure = self.connection.fail_next
        if failure is not None:
            self.connection.fail_next = None
            raise failure
        if statement.startswith("SELECT @@GLOBAL.wsrep_provider_options"):
            self.result = [("evs.suspect_timeout = PT3S",)]
        elif statement == POLL_QUERY:
            self.result = list(self.connection.rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.result[0] if self.result else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.result

    def close(self) -> None:
        pass


class StubConnection:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.fail_next: BaseException | None = None
        self.rows = ROWS
        self.closed = False

    def cursor(self) -> StubCursor:
        return StubCursor(self)

    def shutdown(self) -> None:
        self.closed = True


class StubDriver:
    def __init__(self) -> None:
        self.connections: list[StubConnection] = []
        self.refuse: BaseException | None = None
        self.arguments: dict[str, Any] = {}

    def __call__(self, **arguments: Any) -> StubConnection:
        self.arguments = arguments
        if self.refuse is not None:
            raise self.refuse
        connection = StubConnection()
        self.connections.append(connection)
        return connection
