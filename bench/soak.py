"""Soak: random faults against a real 3-node Galera cluster with one agent per node.

Why: the agent's promises (issue 7) are about behaviour over time, which no single test shows:
never a 200 while the node is unusable, one MySQL connection per agent however many faults and
reconnects there were, and flat RSS, threads and file descriptors. This script starts a local
3-node test bed and three agents (subprocesses, one per node, `--interval 1 --connect-timeout 2
--read-timeout 2`), probes every agent's /health every ~100 ms, and injects one random fault at a
time: freeze/thaw (SIGSTOP/SIGCONT), split (gmcast.isolate on/off), kill -9 + restart, clean
stop + restart, desync on/off. After each fault it waits until the node is Synced and the
cluster whole (wsrep_cluster_size=3 everywhere) before the next.

False healthy: a 200 from the faulted node's agent while the schedule knows the node is
unusable: from injection + allowance (interval + timeout + 0.5 s; for a split also Galera's
evs.inactive_timeout, the time the node itself needs to notice) until the fault is reversed,
and, after a freeze longer than evs.inactive_timeout, the first 3 s after the thaw (the node
still claims Synced/Primary then, though it was evicted). 200s after the reversal and before
the node is seen Synced in a whole cluster are counted apart (they can be legitimate).

Leaks: every few seconds, PROCESSLIST rows of the monitor user on each node (at most 1: each
agent watches its own node) and each agent's RSS, threads and open fds from /proc.

Needs root and the Debian packages mariadb-server, galera-4, rsync. Not run in CI. Traffic only
to 127.0.0.1. Everything started is stopped in `finally` (by PID; frozen nodes thawed first).

Usage: python bench/soak.py [--minutes 30] [--seed N] [--output docs/soak.md]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType

try:
    from galera_health.testbed import GaleraTestbed, TestbedError, TestbedNode, free_ports
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from galera_health.testbed import GaleraTestbed, TestbedError, TestbedNode, free_ports

import _common

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("freeze", "split", "kill9", "stop", "desync")
INACTIVE_TIMEOUT = 6.0  # evs.inactive_timeout of the test bed (PT6S)
PHANTOM_AFTER_THAW = 3.0  # a thawed node claims Synced/Primary this long (DESIGN.md: 1.5-3 s)


@dataclass
class Window:
    """The node is known unusable from `start` until `end` (None: still open)."""

    kind: str
    start: float
    end: float | None = None


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
    recovery_200: int = 0
    slowest: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    max_connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def start_agent(bed: GaleraTestbed, node: TestbedNode, args: argparse.Namespace) -> AgentRun:
    port = free_ports(1)[0]
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by the child's lifetime
        prefix=f"soak-agent-{node.name}-", suffix=".log", delete=False
    )
    command = [
        sys.executable, "-m", "galera_health", "serve",
        "--listen", f"127.0.0.1:{port}",
        "--node", f"{node.name}={node.address()}",
        "--user", bed.monitor_user, "--password-file", bed.password_file,
        "--interval", str(args.interval),
        "--connect-timeout", str(args.connect_timeout),
        "--read-timeout", str(args.read_timeout),
        "--drain-seconds", "0",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    return AgentRun(node.name, port, process, log.name)


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
                if any(
                    sent >= w.start and (w.end is None or answered <= w.end)
                    for w in agent.recovering
                ):
                    agent.recovery_200 += 1
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
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
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
            window = Window(kind, at + detect)
            with agent.lock:
                agent.windows.append(window)
            inject(kind, node)
            faults[kind] += 1
            time.sleep(max(0.0, at + hold - time.monotonic()))
            reversed_at = time.monotonic()
            with agent.lock:
                window.end = reversed_at
                if kind == "freeze":
                    agent.windows.append(
                        Window("thawed", reversed_at, reversed_at + PHANTOM_AFTER_THAW)
                    )
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
                print(
                    f"false healthy on {agent.name}: {fell_in.kind} window, probe sent "
                    f"{probe.sent - fell_in.start:.2f} s after the window opened"
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
        f"| 200 while recovering (informational) | {sum(a.recovery_200 for a in agents)} |",
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
        f"- False healthy: a 200 from the faulted node's agent sent at least {allowance:g} s "
        "(interval + timeout + 0.5 s) after the injection, answered before the reversal; for a "
        f"split {INACTIVE_TIMEOUT:g} s more (evs.inactive_timeout: the node reports Primary "
        f"until it notices); and the first {PHANTOM_AFTER_THAW:g} s after a thaw (the evicted "
        "node still claims Synced/Primary then).",
        "- 200 while recovering: answered after the reversal and before the script saw the "
        "cluster whole again; legitimate once the node is really back (the script looks every "
        "0.25 s), listed to spot a trend, not counted as false healthy.",
        f"- Every {args.sample_every:g} s: `information_schema.PROCESSLIST` rows of the monitor "
        "user on each running node (each agent watches only its node, so at most 1 is correct) "
        "and each agent's VmRSS, Threads (`/proc/PID/status`) and open fds (`/proc/PID/fd`).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
