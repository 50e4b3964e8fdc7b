"""`galera-health writer status | handover --to NODE`: a planned switchover through the lease row.

Run beside an agent with that agent's settings (the same --config, flags and environment as
`serve`). There is no control endpoint: the hand-over is the same compare-and-set request the
priority failback writes (lease_sql.REQUEST, over the writer account), so the holder's next
renewal fails, it hands the row over, and the new holder proves it by its own renewal before it
answers 200. Reads of the agent's verdict (/health/<node>, /writer/<node>) go over HTTP to the
agent's own listener, so "usable right now" is exactly what the load balancer sees.
docs/architecture.md, "A planned hand-over".
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import replace

from .config import NodeAddress, Settings
from .lease import Failure, Identity, LeaseRow, Read, RequestHandover
from .lease_sql import LeaseClient

POLL_SECONDS = 0.2


class HandoverError(Exception):
    """Why the hand-over cannot be done or did not complete: one line, exit 1."""


def agent_answer(settings: Settings, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """The agent's own answer on its listener (0.0.0.0 / :: asked on the loopback)."""
    host = settings.listen.host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    connection = http.client.HTTPConnection(host, settings.listen.port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace").strip()
    except OSError as exc:
        raise HandoverError(
            f"cannot reach the agent at {settings.listen.display()}{path} ({exc}); run this "
            "beside the agent, with its config"
        ) from None
    finally:
        connection.close()


def describe_row(row: LeaseRow) -> str:
    if row.released:
        return f"nobody (the lease is free; epoch {row.epoch})"
    return f"{row.holder} (epoch {row.epoch}, counter {row.counter})"


class Lease:
    """The lease row as one node's connection sees it, over the writer account."""

    def __init__(self, settings: Settings, address: NodeAddress) -> None:
        self.client = LeaseClient(settings.node(address))

    def identity(self) -> Identity:
        found = self.client.connect()
        if isinstance(found, Failure):
            raise HandoverError(f"{self.client.address.name}: {found.detail}")
        return found

    def read(self) -> LeaseRow:
        row = self.client.run(Read())
        if isinstance(row, Failure):
            raise HandoverError(f"{self.client.address.name}: cannot read the lease: {row.detail}")
        assert isinstance(row, LeaseRow)
        return row

    def close(self) -> None:
        self.client.close()


def status(settings: Settings, out: Callable[[str], None] = print) -> int:
    """Who holds the role, as the first reachable node's copy of the row says."""
    problems = []
    for address in settings.nodes:
        lease = Lease(settings, address)
        try:
            row = lease.read()
        except HandoverError as exc:
            problems.append(str(exc))
            continue
        finally:
            lease.close()
        out(f"holder: {describe_row(row)}")
        if row.next_holder:
            out(f"hand-over requested to: {row.next_holder}")
        return 0 if not row.released else 1
    raise HandoverError("; ".join(problems))


def handover(
    settings: Settings,
    target: str,
    timeout: float,
    out: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Ask the holder to hand the role to `target` (a node of these settings, usable now);
    0 once the target's agent answers /writer 200, HandoverError otherwise."""
    address = next(a for a in settings.nodes if a.name == target)
    code, answer = agent_answer(settings, f"/health/{target}")
    if code != 200:
        raise HandoverError(f"{target} is not usable right now: {answer}")
    lease = Lease(settings, address)
    try:
        me = replace(lease.identity(), priority=settings.writer_priority)
        row = lease.read()
        out(f"before: holder {describe_row(row)}")
        if row.released:
            raise HandoverError(
                "no holder: the lease is free, and the agents elect one by themselves"
            )
        if row.holder_id != me.id:
            if row.next_holder_id:
                raise HandoverError(
                    f"a hand-over to {row.next_holder} is already pending; try again later"
                )
            asked = lease.client.run(RequestHandover(row))
            if isinstance(asked, Failure):
                raise HandoverError(f"cannot write the request: {asked.detail}")
            if asked is not True:
                raise HandoverError(
                    "the lease changed while asking (a new holder or another request); "
                    "read it with `galera-health writer status` and try again"
                )
        deadline = clock() + timeout
        answer = "not the holder yet"
        while True:
            now_row = lease.read()
            if now_row.holder_id == me.id:
                code, answer = agent_answer(settings, f"/writer/{target}")
                if code == 200:
                    out(f"after: holder {describe_row(now_row)}")
                    return 0
            if clock() >= deadline:
                raise HandoverError(
                    f"timeout: {target} did not answer /writer 200 within {timeout:g} s "
                    f"(holder now {describe_row(now_row)}; {target}'s /writer: {answer})"
                )
            time.sleep(POLL_SECONDS)
    finally:
        lease.close()
