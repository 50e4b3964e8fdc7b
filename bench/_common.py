"""Shared helpers of the bench scripts: start/stop the agent and the comparison servers as
separate processes (pinned to one core), drive wrk (pinned to the other), read /proc figures.
The processes and the fault servers are testkit's, the same the tests use.

Not a benchmark itself. Everything started here is stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from galera_health.lease_sql import GRANTS  # noqa: E402
from galera_health.testbed import GaleraTestbed, free_ports  # noqa: E402
from testkit.agent import AgentProcess, ServerProcess  # noqa: E402
from testkit.haproxy import Backend  # noqa: E402

PYTHON = sys.executable
BENCH = os.path.join(ROOT, "bench")
SERVER_CPU = 0  # the agent / bare app / naive checker
LOAD_CPU = 1  # wrk and the measuring loops


def pin_self(cpu: int = LOAD_CPU) -> None:
    """Pin this (measuring) process to `cpu` when the machine has it."""
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def taskset(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu < (os.cpu_count() or 1) else []


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it ("unknown" if it does not)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = cpu_model()
    commit = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "commit": commit or "unknown",
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def machine_line() -> str:
    m = machine()
    return (
        f"machine: nproc {m['nproc']}, {m['cpu']}, Python {m['python']}, commit {m['commit']}, "
        f"{m['date']}, loadavg at start {m['load']} (shared machine: compare ratios within a run)"
    )


# --------------------------------------------------------------------------- processes


def start_agent(
    nodes: Sequence[str],
    password_file: str,
    user: str = "health",
    extra: Sequence[str] = (),
    cpu: int | None = SERVER_CPU,
    name: str = "agent",
    wait_healthy: bool = True,
    module: Sequence[str] = ("-m", "galera_health"),
) -> AgentProcess:
    """`galera-health serve` as a separate process (testkit's AgentProcess, pinned to `cpu`, no
    drain); waits until /livez answers (and /health is 200 when wait_healthy)."""
    agent = AgentProcess(
        nodes,
        user,
        password_file,
        extra,
        drain_seconds=0,
        prefix=taskset(cpu) if cpu is not None else (),
        module=module,
        name=name,
        ready_timeout=20,
    )
    try:
        if wait_healthy:
            agent.wait_for(lambda a: a.status == 200, "/health", timeout=30)
    except BaseException:
        agent.stop()
        raise
    return agent


def start_server(
    name: str, command: Sequence[str], ready: str, cpu: int | None = SERVER_CPU
) -> ServerProcess:
    """A comparison server (pinned to `cpu`), once GET `ready` answers 200; killed otherwise."""
    port = free_ports(1)[0]
    prefix = taskset(cpu) if cpu is not None else []
    server = ServerProcess([*prefix, *command, "--port", str(port)], port, name=name)
    try:
        server.wait_for(lambda a: a.status == 200, ready, timeout=20)
    except BaseException:
        server.kill()
        raise
    return server


def start_bare(cpu: int | None = SERVER_CPU, flask: bool = False) -> ServerProcess:
    """bench/bare_app.py: the bare WSGI floor, or with `flask` the same bytes from a plain route."""
    command = [PYTHON, os.path.join(BENCH, "bare_app.py"), *(["--flask"] if flask else [])]
    return start_server("flask" if flask else "bare", command, "/health", cpu)


def start_naive(
    host: str, port: int, user: str, password_file: str, cpu: int | None = SERVER_CPU
) -> ServerProcess:
    """The naive per-request checker (bench/naive_checker.py serve). Waits for /ping only: a
    check of a frozen node would hang (stop it with kill())."""
    command = [
        PYTHON,
        os.path.join(BENCH, "naive_checker.py"),
        "serve",
        "--mysql",
        f"{host}:{port}",
        "--user",
        user,
        "--password-file",
        password_file,
    ]
    return start_server("naive", command, "/ping", cpu)


def get(port: int, path: str = "/health", timeout: float = 1.0) -> tuple[int, str]:
    """One GET on a fresh connection, as a load balancer probes: (status, body); 0 on error."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return 0, ""
    finally:
        connection.close()


# --------------------------------------------------------------------------- the writer's benches


class WriterAgents:
    """One `galera-health serve --writer` agent per test-bed node, for the benches that move the
    writer role through a real HAProxy (writer_lb.py, writer_kill.py).

    The monitor account polls; `writer_user` (created here with the lease's grants plus
    `grants`) holds the lease. Each agent keeps its port across restarts (HAProxy's checks name
    it) and has a state dir (its maintenance file). `extra` flags go to every agent and to
    `writer handover`, which runs beside the target's agent with that agent's flags, as the
    README's runbook says. Agents end by SIGINT at once (SIGTERM would drain for 11 s).
    """

    def __init__(
        self, bed: GaleraTestbed, writer_user: str, grants: Sequence[str] = (), label: str = "w"
    ) -> None:
        bed.create_account(writer_user, (*GRANTS, *grants))
        self.bed = bed
        self.writer_user = writer_user
        self.label = label
        self.ports = {n.name: free_ports(1)[0] for n in bed.nodes}
        self.state = {n.name: tempfile.mkdtemp(prefix=f"{label}-{n.name}-") for n in bed.nodes}
        self.agents: dict[str, ServerProcess] = {}
        self.extra: tuple[str, ...] = ()

    def flags(self, name: str) -> list[str]:
        """Node `name`'s agent settings, shared by `serve` and `writer handover`."""
        node = self.bed.node(name)
        return [
            *("--listen", f"127.0.0.1:{self.ports[name]}", "--node", f"{name}={node.address()}"),
            *("--user", self.bed.monitor_user, "--password-file", self.bed.password_file),
            *("--writer", "--writer-user", self.writer_user),
            *("--writer-password-file", self.bed.password_file, "--state-dir", self.state[name]),
            *self.extra,
        ]

    def start(self, name: str) -> None:
        command = [PYTHON, "-m", "galera_health", "serve", *self.flags(name)]
        agent = ServerProcess(command, self.ports[name], name=f"{self.label}-{name}")
        self.agents[name] = agent
        agent.wait_for(lambda a: a.status in (200, 503), "/livez", timeout=20)

    def start_all(self, extra: Sequence[str] = ()) -> None:
        """(Re)start every agent with `extra` flags."""
        self.stop_all()
        self.extra = tuple(extra)
        for node in self.bed.nodes:
            self.start(node.name)

    def stop(self, name: str) -> None:
        agent = self.agents[name]
        if agent.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent.pid, signal.SIGINT)
        agent.stop()

    def stop_all(self) -> None:
        for name in self.agents:
            self.stop(name)

    def backends(self) -> list[Backend]:
        return [
            Backend(n.name, n.host, n.port, agent_port=self.ports[n.name]) for n in self.bed.nodes
        ]

    def maintenance_file(self, name: str) -> str:
        return os.path.join(self.state[name], "maintenance")

    def writer(self, other_than: str | None = None, timeout: float = 60.0) -> str:
        """The one node whose agent answers /writer 200 (not `other_than`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [n for n, a in self.agents.items() if get(a.port, "/writer")[0] == 200]
            if len(found) == 1 and found[0] != other_than:
                return found[0]
            time.sleep(0.1)
        raise RuntimeError(f"no single writer within {timeout:g} s")

    def handover(self, target: str, timeout: float = 60.0) -> float:
        """`galera-health writer handover --to target` beside its agent, with its flags; the
        seconds until it returned 0 (RuntimeError with its line otherwise)."""
        command = [PYTHON, "-m", "galera_health", "writer", "handover", "--to", target]
        started = time.monotonic()
        done = subprocess.run(
            [*command, *self.flags(target)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"writer handover failed: {done.stderr.strip()}")
        return time.monotonic() - started

    def whole(self) -> None:
        """Every node running, thawed, synced and in one component of all; every agent running
        and /health 200."""
        for node in self.bed.nodes:
            if node.frozen:
                node.thaw()
            if not node.is_running():
                node.start()
        for node in self.bed.nodes:
            node.wait_synced(timeout=180)
        size = str(len(self.bed.nodes))
        deadline = time.monotonic() + 120
        while any(n.status("wsrep_cluster_size") != size for n in self.bed.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("cluster not whole")
            time.sleep(0.25)
        for name, agent in list(self.agents.items()):
            if agent.process.poll() is not None:
                self.stop(name)
                self.start(name)
            self.agents[name].wait_for(lambda a: a.status == 200, "/health", timeout=60)


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    connections: int
    seconds: float
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    non_2xx: int = 0
    timeouts: int = 0
    errors: int = 0  # connect/read/write socket errors
    raw: str = field(default="", repr=False)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str, connections: int, seconds: float = 5.0, timeout: float = 2.0, cpu: int = LOAD_CPU
) -> WrkResult:
    """Debian wrk (keep-alive, one thread) pinned to the load core; bounded by its -d and by a
    subprocess timeout. Latency percentiles are of completed requests only (timeouts are
    counted apart)."""
    command = [
        *taskset(cpu),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        f"--timeout={timeout:g}s",
        "--latency",
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + timeout + 30, check=False
    )
    out = done.stdout
    result = WrkResult(connections, seconds, raw=out + done.stderr)
    for line in out.splitlines():
        parts = line.split()
        if line.strip().startswith("Latency") and len(parts) >= 4 and "Distribution" not in line:
            result.max_ms = _ms(parts[3])
        elif len(parts) == 2 and parts[0] == "50%":
            result.p50_ms = _ms(parts[1])
        elif len(parts) == 2 and parts[0] == "99%":
            result.p99_ms = _ms(parts[1])
        elif "requests in" in line:
            result.requests = int(parts[0])
        elif line.startswith("Requests/sec:"):
            result.rps = float(parts[1])
        elif "Non-2xx or 3xx responses:" in line:
            result.non_2xx = int(parts[-1])
        elif "Socket errors:" in line:
            numbers = [int(x.strip(",")) for x in parts if x.strip(",").isdigit()]
            if len(numbers) == 4:
                result.errors = sum(numbers[:3])
                result.timeouts = numbers[3]
    return result


@contextlib.contextmanager
def wrk_background(
    url: str, connections: int, seconds: float, cpu: int = LOAD_CPU
) -> Iterator[subprocess.Popen[str]]:
    """wrk running while the block runs; killed by PID afterwards if still running."""
    process = subprocess.Popen(
        [*taskset(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=10)


# --------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class ProcSample:
    at: float
    rss_kib: int
    threads: int
    fds: int
    cpu_seconds: float  # utime + stime, children not included


def proc_sample(pid: int) -> ProcSample:
    rss = threads = 0
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return ProcSample(time.monotonic(), rss, threads, fds, cpu)


def cpu_percent(before: ProcSample, after: ProcSample) -> float:
    return 100.0 * (after.cpu_seconds - before.cpu_seconds) / max(1e-9, after.at - before.at)


# --------------------------------------------------------------------------- stats


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return percentile(values, 0.5)


def fmt(value: float, digits: int = 2) -> str:
    if value != value:  # NaN
        return "-"
    return f"{round(value, digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.00"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (printed as is, and pasted into docs/benchmarks.md)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
