"""Shared helpers of the bench scripts: start/stop the agent and the comparison servers as
separate processes (pinned to one core), drive wrk (pinned to the other), read /proc figures.

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
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from galera_health.testbed import free_ports  # noqa: E402

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


class Server:
    """An HTTP server process on 127.0.0.1:port, stopped by PID."""

    def __init__(
        self, name: str, command: Sequence[str], port: int, cpu: int | None = SERVER_CPU
    ) -> None:
        self.name = name
        self.port = port
        self.log_path = f"/tmp/galera-health-bench-{name}-{port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        prefix = taskset(cpu) if cpu is not None else []
        self.process = subprocess.Popen(
            [*prefix, *command],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str = "/health") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_status(self, path: str, statuses: Sequence[int], timeout: float = 30.0) -> float:
        """Seconds until GET path answers one of statuses."""
        started = time.monotonic()
        last = "no answer"
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.output()[-2000:]}")
            status, body = get(self.port, path, timeout=1.0)
            if status in statuses:
                return time.monotonic() - started
            last = f"{status} {body.strip()[:120]}"
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: {path} not {list(statuses)} in {timeout} s ({last})")

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stop(self, grace: float = 10.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)

    def kill(self) -> None:
        """SIGKILL by PID: for the naive checker, whose threads hang on a frozen node."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.stop()


def start_agent(
    nodes: Sequence[str],
    password_file: str,
    user: str = "health",
    extra: Sequence[str] = (),
    cpu: int | None = SERVER_CPU,
    name: str = "agent",
    wait_healthy: bool = True,
    module: Sequence[str] = ("-m", "galera_health"),
) -> Server:
    """`galera-health serve` as a separate process; waits until /livez answers (and /health
    is 200 when wait_healthy)."""
    port = free_ports(1)[0]
    command = [PYTHON, *module, "serve", "--listen", f"127.0.0.1:{port}"]
    for node in nodes:
        command += ["--node", node]
    command += ["--user", user, "--password-file", password_file, "--drain-seconds", "0"]
    command += list(extra)
    server = Server(name, command, port, cpu)
    try:
        server.wait_status("/livez", (200, 503), timeout=20)
        if wait_healthy:
            server.wait_status("/health", (200,), timeout=30)
    except BaseException:
        server.stop()
        raise
    return server


def start_bare(cpu: int | None = SERVER_CPU, flask: bool = False) -> Server:
    """bench/bare_app.py: the bare WSGI floor, or with `flask` the same bytes from a plain route."""
    port = free_ports(1)[0]
    command = [PYTHON, os.path.join(BENCH, "bare_app.py"), "--port", str(port)]
    command += ["--flask"] if flask else []
    server = Server("flask" if flask else "bare", command, port, cpu)
    try:
        server.wait_status("/health", (200,), timeout=20)
    except BaseException:
        server.stop()
        raise
    return server


def start_naive(
    host: str, port: int, user: str, password_file: str, cpu: int | None = SERVER_CPU
) -> Server:
    """The naive per-request checker (bench/naive_checker.py serve). Waits for /ping only: a
    check of a frozen node would hang."""
    http_port = free_ports(1)[0]
    command = [
        PYTHON,
        os.path.join(BENCH, "naive_checker.py"),
        "serve",
        "--port",
        str(http_port),
        "--mysql",
        f"{host}:{port}",
        "--user",
        user,
        "--password-file",
        password_file,
    ]
    server = Server("naive", command, http_port, cpu)
    try:
        server.wait_status("/ping", (200,), timeout=20)
    except BaseException:
        server.kill()
        raise
    return server


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


# --------------------------------------------------------------------------- a switchable proxy


class SwitchProxy:
    """A TCP proxy to a real node that can turn, at once, into a server that never greets
    ("silent") or a blackhole (SYNs dropped), and back. In both fault modes the connections
    already open stop forwarding (a real dead peer does not answer either); when the fault
    ends, they are closed (the old peer is gone) and new connections are forwarded again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "forward"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._fillers: list[socket.socket] = []
        self._listen = self._listener(128)
        self.port = int(self._listen.getsockname()[1])
        self._thread = threading.Thread(target=self._loop, name="switch-proxy", daemon=True)
        self._thread.start()

    @staticmethod
    def _listener(backlog: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        return sock

    def set_mode(self, mode: str) -> None:
        assert mode in ("forward", "silent", "blackhole")
        with self._lock:
            old, self.mode = self.mode, mode
            if old == mode:
                return
            if old == "blackhole":
                self._listen.listen(128)  # a listening socket takes a new backlog in place
                for filler in self._fillers:
                    filler.close()  # the loop accepts their (dead) peers and drops them
                self._fillers = []
            if mode == "forward":
                for client, upstream in self._pairs:
                    for sock in (client, upstream):
                        if sock is not None:
                            sock.close()
                self._pairs = []
            elif mode == "blackhole":
                # nothing accepts any more; a backlog of 0 filled by two connections makes
                # the kernel drop further SYNs (as fault_servers.Blackhole)
                self._listen.listen(0)
                for _ in range(2):
                    filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    filler.setblocking(False)
                    filler.connect_ex(("127.0.0.1", self.port))
                    self._fillers.append(filler)

    def _loop(self) -> None:
        import select

        while not self._stop.is_set():
            with self._lock:
                mode = self.mode
                listen = self._listen
                pairs = list(self._pairs)
            readable: list[socket.socket] = []
            if mode != "blackhole":
                readable.append(listen)
            if mode == "forward":
                for client, upstream in pairs:
                    readable.append(client)
                    if upstream is not None:
                        readable.append(upstream)
            try:
                ready, _, _ = select.select(readable, [], [], 0.02)
            except (OSError, ValueError):
                continue  # a socket was closed by set_mode meanwhile
            with self._lock:
                if self.mode != mode:
                    continue
                for sock in ready:
                    self._handle(sock, mode)

    def _handle(self, sock: socket.socket, mode: str) -> None:
        if sock is self._listen:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            upstream: socket.socket | None = None
            if mode == "forward":
                try:
                    upstream = socket.create_connection(self.target, timeout=2)
                except OSError:
                    client.close()
                    return
            self._pairs.append((client, upstream))
            return
        for client, upstream in self._pairs:
            if sock is client or sock is upstream:
                other = upstream if sock is client else client
                try:
                    data = sock.recv(65536)
                    if data and other is not None:
                        other.sendall(data)
                        return
                except OSError:
                    pass
                client.close()
                if upstream is not None:
                    upstream.close()
                self._pairs.remove((client, upstream))
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            for client, upstream in self._pairs:
                client.close()
                if upstream is not None:
                    upstream.close()
            for sock in [*self._fillers, self._listen]:
                sock.close()
            self._pairs = []
            self._fillers = []
