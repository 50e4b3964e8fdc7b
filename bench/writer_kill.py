"""Pooled clients through HAProxy while the writer role moves: a planned hand-over, maintenance,
a fault; with and without closing the old writer's sessions.

Why: a load balancer's failed probe stops only new connections; a pool's long-lived ones stay
on the old writer (HAProxy in TCP mode, Azure's LB, kube-proxy). writer_users makes the old
writer kill them writer_kill_grace s after it lost the role (docs/architecture.md, "Closing the
old writer's sessions"). This measures what the clients get for each way the role can move.

Set-up: a 3-node test bed, one agent per node with --writer (writer_user with the lease's grants
plus PROCESS, CONNECTION ADMIN; bench/_common.py's WriterAgents), one real HAProxy
(testkit.haproxy at its default, the timing docs/haproxy.md recommends: TCP mode, `inter 1s
fastinter 250ms fall 2 rise 2`, check timeout 1 s, retries 0, no redispatch, established
sessions never cut) whose write rule checks GET /writer. Clients (testkit.workload.Pool):
--workers threads with one long-lived connection each, plus --churn threads whose connection is
recycled every 5 transactions; each transaction updates 2 of 3 hot rows. Per mode (--kill: off,
or on with writer_users = the clients' account and writer_kill_grace = --grace), --rounds times
per move (--moves): --warm s of traffic, then the move on the node that is the writer:

- handover: `galera-health writer handover --to <another node>`, the real CLI as a subprocess
  beside that node's agent with that agent's flags (the README's runbook);
- maintenance: the maintenance file in the writer's agent's state dir;
- freeze: SIGSTOP of the writer's mariadbd (SIGCONT at the end of the hold).

Hold --hold s from the action, restore, wait until the cluster is whole. Figures from the action
to the end of the hold: failed transactions (by error), the 1213 hot-row conflicts, commits on
the old writer and when the last came, when the last failure came, the longest stretch without a
commit; when the old writer's agent first answered /writer 503 and another's 200 (sampled every
100 ms), when HAProxy had the old writer out and the new one in (its stats socket, every 50 ms),
when `writer handover` returned.

Needs root (a 3-node test bed) and /usr/sbin/haproxy.
Usage: python bench/writer_kill.py [--moves handover,maintenance,freeze] [--kill on] [--rounds 3]
       python bench/writer_kill.py --moves maintenance,freeze --kill off,on   (section 12)
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import _common

from galera_health.testbed import GaleraTestbed
from testkit.haproxy import HAProxy, Listener, free_port
from testkit.workload import Pool, PoolResult, prepare_hot

CLIENT = ("pool_bench", "pool-bench-pw-3f1")
AGENT_USER = "gh_kill_bench"
KILL_GRANT = "PROCESS, CONNECTION ADMIN ON *.*"
MOVES = ["handover", "maintenance", "freeze"]
LISTENER = "lb_writer"


class WriterSamples:
    """Every agent's /writer every 100 ms in a thread: (monotonic, the nodes answering 200)."""

    def __init__(self, agents: _common.WriterAgents) -> None:
        self.ports = dict(agents.ports)
        self.samples: list[tuple[float, frozenset[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="writer-samples", daemon=True)

    def __enter__(self) -> WriterSamples:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            found = frozenset(
                n for n, p in self.ports.items() if _common.get(p, "/writer")[0] == 200
            )
            self.samples.append((at, found))
            self._stop.wait(max(0.0, 0.1 - (time.monotonic() - at)))

    def old_out(self, old: str, since: float) -> float | None:
        """Seconds from `since` to the first sample without a 200 on `old`."""
        for at, found in self.samples:
            if at >= since and old not in found:
                return at - since
        return None

    def new_writer(self, old: str, since: float) -> float | None:
        """Seconds from `since` to the first sample with a 200 on another node."""
        for at, found in self.samples:
            if at >= since and found - {old}:
                return at - since
        return None


def haproxy_times(lb: HAProxy, old: str, since: float) -> tuple[float | None, float | None]:
    """Seconds from `since` until HAProxy had the old writer out (no new sessions) and until it
    had another server UP in the write rule."""
    out = new = None
    for change in lb.transitions():
        if change.listener != LISTENER or change.monotonic < since:
            continue
        if out is None and change.server == old and not change.status.startswith("UP"):
            out = change.monotonic - since
        if new is None and change.server != old and change.status == "UP":
            new = change.monotonic - since
    return out, new


@dataclass(frozen=True)
class Figures:
    """One move's figures; seconds are after the action, None when it did not happen."""

    committed: int
    failed: int
    conflicts: int  # 1213
    errors: str
    last_failure: float | None
    on_old: int
    last_on_old: float | None
    gap: float  # the longest stretch without a commit
    old_out: float | None
    new_writer: float | None
    lb_out: float | None
    lb_in: float | None
    handover: float | None
    killed: int | None  # sessions the old writer's agent killed during the hold
    left_on_old: int  # pool connections still on the old writer at the end


def killed_total(agents: _common.WriterAgents, name: str) -> int | None:
    """The old writer's agent's count of killed sessions (/status), None when it has none."""
    try:
        document = agents.agents[name].status()
        return int(document["nodes"][name]["writer"]["sessions"]["killed_total"])
    except (AssertionError, KeyError, TypeError, ValueError):
        return None


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def measure(
    move: str,
    agents: _common.WriterAgents,
    lb: HAProxy,
    args: argparse.Namespace,
    kill: bool,
) -> Figures:
    """One move of the role under the pools' traffic; its figures."""
    bed = agents.bed
    agents.whole()
    old = agents.writer()
    lb.wait(
        lambda states: all(
            s.status.startswith("UP") == (key[1] == old)
            for key, s in states.items()
            if key[0] == LISTENER
        ),
        60,
        f"only {old} routed",
    )
    port = lb.port(LISTENER)
    pools = [
        Pool("127.0.0.1", port, *CLIENT, workers=args.workers).start(),
        Pool("127.0.0.1", port, *CLIENT, workers=args.churn, recycle=5).start(),
    ]
    handover_s: float | None = None
    killed_before = killed_total(agents, old)
    try:
        with WriterSamples(agents) as samples:
            time.sleep(args.warm)
            acted = time.monotonic()
            if move == "handover":
                target = next(n.name for n in bed.nodes if n.name != old)
                handover_s = agents.handover(target)
            elif move == "maintenance":
                open(agents.maintenance_file(old), "w").close()
            else:
                bed.node(old).freeze()
            time.sleep(max(0.0, acted + args.hold - time.monotonic()))
            ended = time.monotonic()
            killed_after = killed_total(agents, old)
            if move == "maintenance":
                os.unlink(agents.maintenance_file(old))
            elif move == "freeze":
                bed.node(old).thaw()
            results: list[PoolResult] = [r for pool in pools for r in pool.stop()]
    finally:
        for pool in pools:  # also when the move failed: no client thread outlives the round
            pool.stop()
    window = [r for r in results if acted <= r.ended <= ended]
    errors = Counter(r.error for r in window if r.error is not None)
    failed_at = [r.ended - acted for r in window if not r.ok]
    on_old = [r.ended - acted for r in window if r.ok and r.node == old]
    out, new = haproxy_times(lb, old, acted)
    last: dict[tuple[int, int], PoolResult] = {}
    for index, pool in enumerate(pools):
        for r in pool.results():
            last[(index, r.worker)] = r
    left = sum(1 for r in last.values() if r.node == old)
    killed = None
    if killed_before is not None and killed_after is not None:
        killed = killed_after - killed_before
    if left and kill:
        lines = agents.agents[old].output().splitlines()
        print(f"    {left} connection(s) left on {old}; its agent's writer lines:", flush=True)
        for line in [x for x in lines if "writer" in x][-12:]:
            print(f"      {line}")
        print(f"    HAProxy: {[t for t in lb.transitions() if t.monotonic >= acted]}")
    commits = sorted(r.ended for r in window if r.ok)
    return Figures(
        committed=sum(1 for r in window if r.ok),
        failed=sum(errors.values()),
        conflicts=errors.get("1213", 0),
        errors=", ".join(f"{k} x{v}" for k, v in errors.most_common()) or "-",
        last_failure=max(failed_at) if failed_at else None,
        on_old=len(on_old),
        last_on_old=max(on_old) if on_old else None,
        gap=max(b - a for a, b in itertools.pairwise([acted, *commits, ended])),
        old_out=samples.old_out(old, acted),
        new_writer=samples.new_writer(old, acted),
        lb_out=out,
        lb_in=new,
        handover=handover_s,
        killed=killed,
        left_on_old=left,
    )


def spread(values: Sequence[float | None], digits: int = 1) -> str:
    """median (min-max) of the rounds; "-" where a round had none."""
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    text = _common.fmt(statistics.median(known), digits)
    if len(known) > 1:
        text += f" ({_common.fmt(min(known), digits)}-{_common.fmt(max(known), digits)})"
    return text + ("" if len(known) == len(values) else f" [{len(values) - len(known)} none]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm", type=float, default=4.0)
    parser.add_argument("--hold", type=float, default=12.0)
    parser.add_argument("--grace", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--churn", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--moves", default=",".join(MOVES), help="handover, maintenance, freeze")
    parser.add_argument("--kill", default="on", help="off, on or off,on: writer_users")
    args = parser.parse_args()
    moves = [m.strip() for m in args.moves.split(",") if m.strip()]
    modes = [m.strip() == "on" for m in args.kill.split(",") if m.strip()]
    if not set(moves) <= set(MOVES) or not modes:
        parser.error(f"--moves takes {', '.join(MOVES)}; --kill takes off, on")
    print(_common.machine_line())
    rows: list[tuple[str, bool, int, Figures]] = []
    with GaleraTestbed(3) as bed:
        agents = _common.WriterAgents(bed, AGENT_USER, (KILL_GRANT,), label="writer-kill")
        prepare_hot(bed.nodes[0].sql, *CLIENT, rows=3)
        for node in bed.nodes:
            while (
                node.sql(f"SELECT COUNT(*) FROM mysql.global_priv WHERE User='{CLIENT[0]}'")[0][0]
                != "1"
                or node.sql("SELECT COUNT(*) FROM pool_hot.hot")[0][0] != "3"
            ):
                time.sleep(0.1)
        try:
            with HAProxy([Listener(LISTENER, "writer", free_port(), agents.backends())]) as lb:
                for kill in modes:
                    kill_flags = [
                        "--writer-users",
                        CLIENT[0],
                        "--writer-kill-grace",
                        f"{args.grace:g}",
                    ]
                    agents.start_all(kill_flags if kill else ())
                    for number in range(1, args.rounds + 1):
                        for move in moves:
                            figures = measure(move, agents, lb, args, kill)
                            rows.append((move, kill, number, figures))
                            print(
                                f"  {move} (kill {'on' if kill else 'off'}) round {number}: "
                                f"failed {figures.failed}, 1213 {figures.conflicts}",
                                flush=True,
                            )
                agents.whole()
        finally:
            agents.stop_all()
    print(
        f"\n{args.workers} pooled + {args.churn} recycled (every 5) clients through HAProxy's "
        f"/writer rule, {args.hold:g} s from the action on the writer; seconds after the action:"
    )

    def mode(kill: bool) -> str:
        return f"on, grace {args.grace:g} s" if kill else "off"

    print(
        _common.table(
            [
                "move",
                "writer_users kill",
                "round",
                "committed",
                "failed",
                "1213",
                "failures by error",
                "last failure",
                "commits on the old writer",
                "last of them",
                "longest without a commit",
                "/writer: old 503 / another 200",
                "HAProxy: old out / new in",
                "handover returned",
                "killed / left on the old writer",
            ],
            [
                [
                    move,
                    mode(kill),
                    str(number),
                    str(f.committed),
                    str(f.failed),
                    str(f.conflicts),
                    f.errors,
                    seconds(f.last_failure),
                    str(f.on_old),
                    seconds(f.last_on_old),
                    seconds(f.gap),
                    f"{seconds(f.old_out)} / {seconds(f.new_writer)}",
                    f"{seconds(f.lb_out)} / {seconds(f.lb_in)}",
                    seconds(f.handover),
                    f"{'-' if f.killed is None else f.killed} / {f.left_on_old}",
                ]
                for move, kill, number, f in rows
            ],
        )
    )
    print("\nPer move and mode, median (min-max) over the rounds:")
    summary = []
    for move in moves:
        for kill in modes:
            mine = [f for m, k, _, f in rows if m == move and k == kill]
            summary.append(
                [
                    move,
                    mode(kill),
                    str(len(mine)),
                    spread([float(f.failed) for f in mine], 0),
                    spread([float(f.conflicts) for f in mine], 0),
                    spread([f.last_failure for f in mine]),
                    spread([float(f.on_old) for f in mine], 0),
                    spread([f.last_on_old for f in mine]),
                    spread([f.gap for f in mine]),
                ]
            )
    print(
        _common.table(
            [
                "move",
                "writer_users kill",
                "rounds",
                "failed",
                "1213",
                "last failure (s)",
                "commits on the old writer",
                "last of them (s)",
                "longest without a commit (s)",
            ],
            summary,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
