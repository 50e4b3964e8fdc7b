"""Soak: random faults against a real 3-node Galera cluster with one agent per node.

Why: the agent's promises (issue 7) are about behaviour over time, which no single test shows:
never a 200 while the node is unusable, one MySQL connection per agent however many faults and
reconnects there were, and flat RSS, threads and file descriptors. This script starts a local
3-node test bed and three agents (subprocesses, one per node, `--interval 1 --connect-timeout 2
--read-timeout 2`), probes every agent's /health every ~100 ms, and injects one random fault at a
time: freeze/thaw (SIGSTOP/SIGCONT), split (gmcast.isolate on/off), kill -9 + restart, clean
stop + restart, desync on/off. After each fault it waits until the node is Synced and the
cluster whole (wsrep_cluster_size=3 everywhere) before the next.

False healthy: a 200 from the faulted node's agent that the node's real state contradicts.
- Inside the fault: from the moment the fault is in effect + allowance (interval + timeout +
  0.5 s; for a split also Galera's evs.inactive_timeout, the time the node itself needs to
  notice) until the fault is reversed. "In effect": before the call for freeze, split and desync;
  when the call returns for kill -9 and stop (they wait until mariadbd has exited).
- After the reversal, until the script sees the cluster whole again: a 200 answered at t is false
  if another node, asked after t, still did not count the faulted node in its primary component
  (wsrep_cluster_size < 3). A membership watcher asks every node every 0.1 s over its own
  connection (user soak_oracle, not the agents' user). This catches a thawed node that still
  claims Primary/Synced although the others evicted it, without a fixed guess of how long that
  lasts; a 200 after the node has really rejoined is legitimate however early it comes.

Leaks: every few seconds, PROCESSLIST rows of the monitor user on each node (at most 1: each
agent watches its own node) and each agent's RSS, threads and open fds from /proc.

Needs root and the Debian packages mariadb-server, galera-4, rsync. Not run in CI. Traffic only
to 127.0.0.1. Everything started is stopped in `finally` (by PID; frozen nodes thawed first).

Usage: python bench/soak.py [--minutes 30] [--seed N] [--output docs/soak.md]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import http.client
import math
import os
import platform
import random
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import mysql.connector

try:
    from galera_health.testbed import GaleraTestbed, TestbedError, TestbedNode
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from galera_health.testbed import GaleraTestbed, TestbedError, TestbedNode

import _common

from testkit.agent import AgentProcess

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("freeze", "split", "kill9", "stop", "desync")
INACTIVE_TIMEOUT = 6.0  # evs.inactive_timeout of the test bed (PT6S)
ORACLE_USER = "soak_oracle"  # the membership watcher's own account, not counted as the agent's
WATCH_EVERY = 0.1  # seconds between the membership watcher's questions to each node


@dataclass
class Window:
    """The node is known unusable from `start` until `end` (None: still open)."""

    kind: str
    start: float
    end: float | None = None


@dataclass
class Membership:
    """One answer of the membership watcher: `observer` counted `size` members at some moment
    between `sent` and `answered`."""

    observer: str
    sent: float
    answered: float
    size: int
    primary: bool


@dataclass
class Probe:
    sent: float
    answered: float
    status: int  # 0: no answer within the timeout
    window: Window | None = None  # for a false healthy: the unusable window it fell in
    evidence: str = ""  # for the first false healthy of a window: what the agent and node said


@dataclass
class Sample:
    at: float
    rss_kib: int
    threads: int
    fds: int


@dataclass
class AgentRun:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: str
    windows: list[Window] = field(default_factory=list)
    recovering: list[Window] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    probes: int = 0
    in_windows: int = 0  # probes judged: sent and answered inside an unusable window
    false_healthy: list[Probe] = field(default_factory=list)
    recovery_200s: list[Probe] = field(default_factory=list)  # judged by membership at the end
    recovery_200: int = 0  # of those, the ones the membership watcher confirms
    slowest: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    max_connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def start_agent(bed: GaleraTestbed, node: TestbedNode, args: argparse.Namespace) -> AgentRun:
    """testkit's AgentProcess (the tests' own), no drain; its log is kept on a false healthy."""
    agent = AgentProcess(
        [f"{node.name}={node.address()}"],
        bed.monitor_user,
        bed.password_file,
        [
            "--interval", str(args.interval),
            "--connect-timeout", str(args.connect_timeout),
            "--read-timeout", str(args.read_timeout),
            *args.agent_arg,
        ],
        drain_seconds=0,
        name=f"soak-agent-{node.name}",
    )  # fmt: skip
    return AgentRun(node.name, agent.port, agent.process, agent.log.name)


def get_status(port: int) -> str:
    """The agent's /status body, for the evidence of a false healthy."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        connection.request("GET", "/status")
        return connection.getresponse().read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"/status failed: {exc}"
    finally:
        connection.close()


def get_health(port: int, timeout: float) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        connection.close()


def prober(
    agent: AgentRun, node: TestbedNode, every: float, timeout: float, stop: threading.Event
) -> None:
    while not stop.is_set():
        sent = time.monotonic()
        status = get_health(agent.port, timeout)
        answered = time.monotonic()
        with agent.lock:
            agent.probes += 1
            agent.statuses[status] += 1
            agent.slowest = max(agent.slowest, answered - sent)
            inside = [
                w for w in agent.windows if sent >= w.start and (w.end is None or answered <= w.end)
            ]
            judged = bool(inside)
            agent.in_windows += judged
            if status == 200:
                if judged:
                    first = all(p.window is not inside[0] for p in agent.false_healthy)
                    probe = Probe(sent, answered, status, inside[0])
                    agent.false_healthy.append(probe)
                    if first:  # what the agent based its 200 on, and whether mariadbd lived
                        probe.evidence = (
                            f"mariadbd running={node.is_running()} frozen={node.frozen}; "
                            f"/status: {get_status(agent.port)}"
                        )
                recovery = next(
                    (
                        w
                        for w in agent.recovering
                        if sent >= w.start and (w.end is None or answered <= w.end)
                    ),
                    None,
                )
                if recovery is not None:
                    first = all(p.window is not recovery for p in agent.recovery_200s)
                    probe = Probe(sent, answered, status, recovery)
                    agent.recovery_200s.append(probe)
                    if first:  # judged at the end; keep what the agent said, in case
                        probe.evidence = f"/status: {get_status(agent.port)}"
        stop.wait(max(0.0, every - (time.monotonic() - sent)))


def proc_sample(pid: int) -> Sample:
    measured = _common.proc_sample(pid)
    return Sample(measured.at, measured.rss_kib, measured.threads, measured.fds)


def monitor_connections(bed: GaleraTestbed, node: TestbedNode) -> int | None:
    """PROCESSLIST rows of the monitor user on `node` (None: the node cannot answer now)."""
    if not node.is_running() or node.frozen:
        return None
    user = bed.monitor_user.replace("'", "''")
    try:
        rows = node.sql(
            f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'",
            timeout=5,
        )
        return int(rows[0][0])
    except (TestbedError, ValueError, IndexError):
        return None


def sampler(
    bed: GaleraTestbed, agents: list[AgentRun], every: float, stop: threading.Event
) -> None:
    while not stop.wait(every):
        for agent in agents:
            if agent.process.poll() is not None:
                continue
            with contextlib.suppress(OSError):
                sample = proc_sample(agent.process.pid)
                with agent.lock:
                    agent.samples.append(sample)
            count = monitor_connections(bed, bed.node(agent.name))
            if count is not None:
                with agent.lock:
                    agent.max_connections = max(agent.max_connections, count)


def create_oracle_user(bed: GaleraTestbed) -> str:
    """The membership watcher's account (USAGE is enough for SHOW STATUS); its own user so the
    leak sampler still counts only the agents' connections."""
    password = secrets.token_urlsafe(18)
    statements = " ".join(
        f"CREATE USER IF NOT EXISTS '{ORACLE_USER}'@'{host}' IDENTIFIED BY '{password}';"
        for host in ("127.0.0.1", "localhost")
    )
    bed.nodes[0].sql(statements)
    deadline = time.monotonic() + 30
    for node in bed.nodes:  # DDL replicates in total order; wait until each node has it
        while node.sql(f"SELECT COUNT(*) FROM mysql.global_priv WHERE User='{ORACLE_USER}'") != [
            ["2"]
        ]:
            if time.monotonic() > deadline:
                raise TestbedError(f"{node.name}: {ORACLE_USER} not replicated within 30 s")
            time.sleep(0.2)
    return password


def watch_membership(
    node: TestbedNode,
    password: str,
    out: list[Membership],
    lock: threading.Lock,
    stop: threading.Event,
) -> None:
    """Ask `node` every WATCH_EVERY s how many members its component has, over one connection
    with 2 s deadlines (a frozen or dead node only costs this thread its answers)."""
    connection: Any = None
    cursor: Any = None
    while not stop.is_set():
        sent = time.monotonic()
        try:
            if connection is None:
                connection = mysql.connector.connect(
                    host=node.host,
                    port=node.port,
                    user=ORACLE_USER,
                    password=password,
                    connection_timeout=2,
                    read_timeout=2,
                    write_timeout=2,
                    use_pure=True,
                )
                cursor = connection.cursor()
            cursor.execute(
                "SHOW GLOBAL STATUS WHERE Variable_name IN "
                "('wsrep_cluster_size', 'wsrep_cluster_status')"
            )
            values = {str(k).lower(): str(v) for k, v in cursor.fetchall()}
            answered = time.monotonic()
            seen = Membership(
                node.name,
                sent,
                answered,
                int(values["wsrep_cluster_size"]),
                values["wsrep_cluster_status"] == "Primary",
            )
            with lock:
                out.append(seen)
        except (mysql.connector.Error, OSError, KeyError, ValueError):
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.shutdown()
            connection = cursor = None
        stop.wait(max(0.0, WATCH_EVERY - (time.monotonic() - sent)))


def judge_recovery(agent: AgentRun, members: int, memberships: list[Membership]) -> None:
    """A 200 answered after the reversal is false if another Primary node, asked after it was
    answered (and before the cluster was seen whole), still counted fewer than all members: the
    faulted node was out of the cluster then, so it was out when the agent's poll read its
    state too (recovery only goes from out to in). A 200 after the node has really rejoined is
    a legitimate recovery 200, however early it comes."""
    out_times = sorted(
        m.sent for m in memberships if m.observer != agent.name and m.primary and m.size < members
    )
    for probe in agent.recovery_200s:
        window_end = probe.window.end if probe.window and probe.window.end else math.inf
        later = bisect.bisect_right(out_times, probe.answered)
        if later < len(out_times) and out_times[later] <= window_end:
            agent.false_healthy.append(probe)
        else:
            agent.recovery_200 += 1


def whole(bed: GaleraTestbed) -> bool:
    try:
        return all(n.status("wsrep_cluster_size") == str(len(bed.nodes)) for n in bed.nodes)
    except TestbedError:
        return False


def recover(bed: GaleraTestbed, timeout: float = 300) -> None:
    """Undo every fault and wait until every node is Synced and the cluster whole."""
    deadline = time.monotonic() + timeout
    for node in bed.nodes:
        if node.frozen:
            node.thaw()
        if not node.is_running():
            node.start(timeout=max(10.0, deadline - time.monotonic()))
        node.isolate(False)
        node.sql("SET GLOBAL wsrep_desync = OFF")
    while True:
        for node in bed.nodes:
            node.wait_synced(timeout=max(1.0, deadline - time.monotonic()))
        if whole(bed) and all(
            n.statuses(["wsrep_local_state"]).get("wsrep_local_state") == "4" for n in bed.nodes
        ):
            return
        if time.monotonic() > deadline:
            raise TestbedError(f"cluster not whole and Synced after {timeout:.0f} s")
        time.sleep(0.25)


def inject(kind: str, node: TestbedNode) -> None:
    if kind == "freeze":
        node.freeze()
    elif kind == "split":
        node.isolate(True)
    elif kind == "kill9":
        node.kill()
    elif kind == "stop":
        node.stop()
    elif kind == "desync":
        node.sql("SET GLOBAL wsrep_desync = ON")


def reverse(kind: str, node: TestbedNode) -> None:
    if kind == "freeze":
        node.thaw()
    elif kind == "split":
        node.isolate(False)
    elif kind in ("kill9", "stop"):
        node.start(timeout=180)
    elif kind == "desync":
        node.sql("SET GLOBAL wsrep_desync = OFF")


def hold_seconds(kind: str, rng: random.Random) -> float:
    if kind == "split":  # the window opens only after evs.inactive_timeout + allowance
        return rng.uniform(14, 25)
    if kind == "freeze":  # longer than evs.inactive_timeout: the node is evicted
        return rng.uniform(9, 20)
    return rng.uniform(6, 18)


def summary_of(values: list[int]) -> str:
    return f"{values[0]} / {values[-1]} / {max(values)}" if values else "-"


def machine() -> str:
    model = _common.cpu_model()
    memory = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        memory = f"{int(handle.readline().split()[1]) // 1024} MiB RAM"
    return f"{platform.node()}: {os.cpu_count()} CPUs ({model}), {memory}, {platform.platform()}"


def command_output(*command: str) -> str:
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=10, cwd=ROOT
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Random Galera faults against three real agents: false-healthy answers, "
        "leaked MySQL connections, RSS/threads/fds over time."
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="soak length (default 30)")
    parser.add_argument("--seed", type=int, default=None, help="fault schedule seed")
    parser.add_argument("--interval", type=float, default=1.0, help="agent poll interval")
    parser.add_argument("--connect-timeout", type=int, default=2)
    parser.add_argument("--read-timeout", type=int, default=2)
    parser.add_argument("--probe-every", type=float, default=0.1, help="seconds between probes")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--output", default=str(ROOT / "docs" / "soak.md"), help="markdown report ('' for none)"
    )
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="comma-separated faults to draw from; repeat one to weight it (default: each once)",
    )
    parser.add_argument(
        "--agent-arg",
        action="append",
        default=[],
        help="extra galera-health serve argument, repeatable (e.g. --agent-arg=--hold-down=0 "
        "to check that the soak catches a thawed node's phantom 200s)",
    )
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or any(k not in KINDS for k in kinds):
        parser.error(f"--kinds takes names from {', '.join(KINDS)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    rng = random.Random(seed)
    allowance = args.interval + max(args.connect_timeout, args.read_timeout) + 0.5

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    bed = GaleraTestbed(3)
    agents: list[AgentRun] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []
    memberships: list[Membership] = []
    membership_lock = threading.Lock()
    faults: Counter[str] = Counter()
    recovery_seconds: dict[str, list[float]] = {k: [] for k in KINDS}
    started_wall = datetime.now(timezone.utc)
    # The code the agents run is the code at start: record it now, not when the report is written.
    commit = command_output("git", "rev-parse", "--short", "HEAD")
    if command_output("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (working tree had uncommitted changes)"
    soak_started = time.monotonic()
    aborted = ""
    try:
        print(f"seed {seed}; starting a 3-node test bed...", flush=True)
        bed.start()
        agents = [start_agent(bed, node, args) for node in bed.nodes]
        deadline = time.monotonic() + 30
        while not all(get_health(a.port, 2) == 200 for a in agents):
            if time.monotonic() > deadline:
                raise RuntimeError("agents not all 200 within 30 s of start")
            time.sleep(0.2)
        for agent in agents:
            threads.append(
                threading.Thread(
                    target=prober,
                    args=(agent, bed.node(agent.name), args.probe_every, 2.0, stop),
                    daemon=True,
                )
            )
        threads.append(
            threading.Thread(
                target=sampler, args=(bed, agents, args.sample_every, stop), daemon=True
            )
        )
        oracle_password = create_oracle_user(bed)
        for node in bed.nodes:
            threads.append(
                threading.Thread(
                    target=watch_membership,
                    args=(node, oracle_password, memberships, membership_lock, stop),
                    daemon=True,
                )
            )
        for thread in threads:
            thread.start()
        soak_started = time.monotonic()
        end = soak_started + args.minutes * 60
        print(f"agents up; soaking {args.minutes:g} min", flush=True)
        while time.monotonic() < end:
            kind = rng.choice(kinds)
            agent = rng.choice(agents)
            node = bed.node(agent.name)
            hold = hold_seconds(kind, rng)
            detect = allowance + (INACTIVE_TIMEOUT if kind == "split" else 0.0)
            at = time.monotonic()
            window = Window(kind, float("inf"))  # opens once the fault is in effect
            with agent.lock:
                agent.windows.append(window)
            inject(kind, node)
            in_effect = time.monotonic() if kind in ("kill9", "stop") else at
            with agent.lock:
                window.start = in_effect + detect
            faults[kind] += 1
            time.sleep(max(0.0, at + hold - time.monotonic()))
            reversed_at = time.monotonic()
            with agent.lock:
                window.end = reversed_at
            reverse(kind, node)
            recovery = Window(kind, reversed_at)
            with agent.lock:
                agent.recovering.append(recovery)
            recover(bed)
            recovery.end = time.monotonic()
            recovery_seconds[kind].append(recovery.end - reversed_at)
            elapsed = (time.monotonic() - soak_started) / 60
            with agent.lock:
                false = len(agent.false_healthy)
            print(
                f"{elapsed:5.1f} min  {kind:6s} {node.name} held {hold:4.1f} s, "
                f"whole again {recovery.end - reversed_at:5.1f} s after reversal; "
                f"false healthy so far on {node.name}: {false}",
                flush=True,
            )
            dead = [a.name for a in agents if a.process.poll() is not None]
            if dead:
                raise RuntimeError(f"agent(s) exited: {dead}")
            time.sleep(rng.uniform(2, 6))
    except (Exception, KeyboardInterrupt, SystemExit) as exc:
        aborted = f"{type(exc).__name__}: {exc}"
        print(f"soak aborted: {aborted}", file=sys.stderr, flush=True)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        duration = time.monotonic() - soak_started
        alive = {a.name: a.process.poll() is None for a in agents}
        for agent in agents:
            if agent.process.poll() is None:
                os.kill(agent.process.pid, signal.SIGTERM)
                try:
                    agent.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.kill(agent.process.pid, signal.SIGKILL)
                    agent.process.wait(timeout=15)
        for node in bed.nodes:
            with contextlib.suppress(Exception):
                if node.frozen:
                    node.thaw()
        bed.stop()
    for agent in agents:
        judge_recovery(agent, len(bed.nodes), memberships)
    report = render(
        args, seed, started_wall, commit, duration, faults, recovery_seconds, agents, alive, aborted
    )
    print(report)
    if args.output:
        Path(args.output).write_text(report)
        print(f"written to {args.output}")
    for agent in agents:
        for probe in agent.false_healthy:
            fell_in = probe.window
            if fell_in is not None:
                where = (
                    "after the reversal, while the other nodes still counted it out"
                    if fell_in in agent.recovering
                    else "after the window opened"
                )
                print(
                    f"false healthy on {agent.name}: {fell_in.kind}, probe sent "
                    f"{probe.sent - fell_in.start:.2f} s {where}"
                )
                if probe.evidence:
                    print(f"  evidence: {probe.evidence}")
        if agent.false_healthy:
            print(f"kept {agent.name}'s agent log for the false healthy: {agent.log_path}")
            continue
        with contextlib.suppress(OSError):
            os.unlink(agent.log_path)
    failed = aborted or any(a.false_healthy for a in agents) or not all(alive.values())
    return 1 if failed else 0


def render(
    args: argparse.Namespace,
    seed: int,
    started: datetime,
    commit: str,
    duration: float,
    faults: Counter[str],
    recovery_seconds: dict[str, list[float]],
    agents: list[AgentRun],
    alive: dict[str, bool],
    aborted: str,
) -> str:
    mariadb = command_output("mariadbd", "--version") or command_output(
        "/usr/sbin/mariadbd", "--version"
    )
    probes = sum(a.probes for a in agents)
    false_total = sum(len(a.false_healthy) for a in agents)
    statuses: Counter[int] = Counter()
    for agent in agents:
        statuses.update(agent.statuses)
    allowance = args.interval + max(args.connect_timeout, args.read_timeout) + 0.5
    lines = [
        "# Soak: random faults against a real 3-node Galera cluster",
        "",
        "Produced by `bench/soak.py` (not run in CI); rerun it to refresh these figures.",
        "",
        "| | |",
        "|---|---|",
        f"| machine | {machine()} |",
        f"| date (UTC) | {started:%Y-%m-%d %H:%M} |",
        f"| git commit | {commit} |",
        f"| MariaDB | {mariadb} |",
        f"| duration | {duration / 60:.1f} min (asked {args.minutes:g}); seed {seed} |",
        f"| agents | one per node, `--interval {args.interval:g} --connect-timeout "
        f"{args.connect_timeout} --read-timeout {args.read_timeout}` |",
        f"| faults injected | {sum(faults.values())}: "
        + ", ".join(f"{k} {faults[k]}" for k in KINDS)
        + " |",
        f"| probes sent | {probes} (`GET /health` every {args.probe_every:g} s per agent); "
        + ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(statuses.items()))
        + " |",
        f"| probes inside unusable windows | {sum(a.in_windows for a in agents)} "
        "(each must not be a 200) |",
        f"| **false healthy** | **{false_total}** |",
        f"| 200 while recovering, node confirmed back by the other nodes | "
        f"{sum(a.recovery_200 for a in agents)} |",
        f"| slowest probe | {max((a.slowest for a in agents), default=0) * 1000:.0f} ms |",
        f"| agents alive at the end | {', '.join(f'{k}: {v}' for k, v in alive.items())} |",
    ]
    if aborted:
        lines.append(f"| aborted | {aborted} |")
    lines += [
        "",
        "Recovery, reversal to Synced in a whole cluster (s, median / max): "
        + ", ".join(
            f"{k} {statistics.median(v):.1f} / {max(v):.1f}"
            for k, v in recovery_seconds.items()
            if v
        )
        + ".",
        "",
        "## Per agent",
        "",
        "| agent | probes | inside windows | false healthy | max monitor connections on its "
        "node | RSS KiB first / last / max | threads first / last / max "
        "| fds first / last / max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for agent in agents:
        lines.append(
            f"| {agent.name} | {agent.probes} | {agent.in_windows} | {len(agent.false_healthy)} "
            f"| {agent.max_connections} "
            f"| {summary_of([s.rss_kib for s in agent.samples])} "
            f"| {summary_of([s.threads for s in agent.samples])} "
            f"| {summary_of([s.fds for s in agent.samples])} |"
        )
    lines += [
        "",
        "## Method",
        "",
        "- One fault at a time on a random node: freeze (SIGSTOP, held 9-20 s, then SIGCONT), "
        "split (`gmcast.isolate=1`, 14-25 s, then `=0`), kill -9 then restart, clean stop then "
        "restart, `wsrep_desync=ON` then `OFF` (6-18 s). After each reversal the script waits "
        "until every node is Synced and `wsrep_cluster_size=3` on every node, then 2-6 s more.",
        f"- False healthy, inside the fault: a 200 from the faulted node's agent sent at least "
        f"{allowance:g} s (interval + timeout + 0.5 s) after the fault was in effect (before "
        "the call for freeze, split and desync; once mariadbd had exited for kill -9 and stop), "
        f"answered before the reversal; for a split {INACTIVE_TIMEOUT:g} s more "
        "(evs.inactive_timeout: the node reports Primary until it notices).",
        "- False healthy, after the reversal: a 200 answered at t while another Primary node, "
        f"asked after t, still counted fewer than 3 members (a watcher asks every node every "
        f"{WATCH_EVERY:g} s as `{ORACLE_USER}`): the node was still out of the cluster, e.g. a "
        "thawed node that still claims Synced/Primary. 200s after the node really rejoined are "
        "counted as recovery 200s.",
        f"- Every {args.sample_every:g} s: `information_schema.PROCESSLIST` rows of the monitor "
        "user on each running node (each agent watches only its node, so at most 1 is correct) "
        "and each agent's VmRSS, Threads (`/proc/PID/status`) and open fds (`/proc/PID/fd`).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
