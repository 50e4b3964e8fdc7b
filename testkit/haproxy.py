"""A real HAProxy (the Debian package) in TCP mode in front of the test bed, for tests and bench/.

The configuration is generated from a list of :class:`Listener` (one `listen` section each: a
port, a check style, the servers), written to a private temp dir and started in the foreground
(`-db`). The process is stopped by its PID and the temp dir always removed. The stats socket
gives each server's state as HAProxy sees it; a watcher thread records every change with its
time; the log (stdout) has one line per client session, naming the server that got it.
HAProxy runs one thread: with two, HAProxy 2.6 dropped about 0.7 % of these lines when sessions
ended at once (`show info` DroppedLogs: 4 of 788 in 10 s of 4 clients; 0 of 1,188 with one
thread), and the harness must account for every session.

The settings are docs/haproxy.md's: `fall 2 rise 2` with `fastinter 250ms` (one blip between
HAProxy and the agents must not take every server out: bench/haproxy_checks.py, docs/benchmarks.md
section 10), a check timeout no longer than the interval, no redispatch, retries 0, and
established sessions never cut (no `on-marked-down shutdown-sessions`).
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from galera_health.testbed import free_ports

HAPROXY = "/usr/sbin/haproxy"

# What each check style puts in the `listen` section, and on each `server` line ({agent} is the
# agent's HTTP port, {agent_check} its agent-check port, {name} the server's name).
CHECK_STYLES: dict[str, tuple[str, str]] = {
    # the agent over HTTP, the way the Azure LB asks: GET /health, 200 or not
    "health": (
        "option httpchk GET /health\n    http-check expect status 200",
        "check port {agent}",
    ),
    # a write rule (--writer): only the one elected writer answers 200 on /writer
    "writer": (
        "option httpchk GET /writer\n    http-check expect status 200",
        "check port {agent}",
    ),
    # a read rule off the writer (--writer): 200 on a usable node that is not the writer
    "reader": (
        "option httpchk GET /reader\n    http-check expect status 200",
        "check port {agent}",
    ),
    # what most HAProxy + clustercheck setups on port 9200 have: OPTIONS / HTTP/1.0, 2xx/3xx ok
    "bare": ("option httpchk", "check port {agent}"),
    # a check on `/` (the Azure portal's default probe path)
    "root": ("option httpchk GET /", "check port {agent}"),
    # HAProxy's agent-check protocol next to a plain TCP check of the MySQL port
    "agent": ("", "check agent-check agent-port {agent_check} agent-inter {inter}"),
    # the same, with HAProxy's `agent-send` (the server's name and a newline) before each read:
    # the agent must read and discard it, so that its close is a FIN and not a reset
    "agent-send": (
        "",
        'check agent-check agent-port {agent_check} agent-inter {inter} agent-send "{name}\\n"',
    ),
    # no agent at all: a TCP connect to the MySQL port (what many Azure set-ups start with)
    "tcp": ("", "check"),
}

# One line per client session, logged when it ends; "session" tells them from the other lines.
LOG_FORMAT = "session %Ts.%ms %rt %f %s %cp %Tc %Tt %ts"


def free_port() -> int:
    """A listening port outside the kernel's ephemeral range (free_ports says why)."""
    return free_ports(1)[0]


@dataclass(frozen=True)
class Backend:
    """One database node behind the LB, and where its agent answers."""

    name: str
    host: str
    port: int
    agent_port: int = 0  # the agent's HTTP listener
    agent_check_port: int = 0  # the agent's agent-check listener


@dataclass(frozen=True)
class Listener:
    name: str
    style: str  # a key of CHECK_STYLES
    port: int
    servers: Sequence[Backend]
    # appended to each `server` line: its own check timing (`fall 2 rise 2 fastinter 250ms`)
    # overrides the `default-server` line, so listeners with different timings share one HAProxy
    server_options: str = ""


def render(
    listeners: Sequence[Listener],
    inter: str = "1s",
    check_timeout: str = "1s",
    fastinter: str = "250ms",
) -> str:
    """The `defaults` and `listen` sections (the global section is the harness's own)."""
    lines = [
        "defaults",
        "    mode tcp",
        "    log global",
        f'    log-format "{LOG_FORMAT}"',
        "    balance roundrobin",
        "    retries 0",
        "    no option redispatch",
        "    timeout connect 2s",
        "    timeout client 1m",
        "    timeout server 1m",
        f"    timeout check {check_timeout}",
        f"    default-server inter {inter} fastinter {fastinter} fall 2 rise 2",
    ]
    for listener in listeners:
        section, server_options = CHECK_STYLES[listener.style]
        lines += ["", f"listen {listener.name}", f"    bind 127.0.0.1:{listener.port}"]
        if section:
            lines.append(f"    {section}")
        for backend in listener.servers:
            options = server_options.format(
                agent=backend.agent_port,
                agent_check=backend.agent_check_port,
                inter=inter,
                name=backend.name,
            )
            if listener.server_options:
                options = f"{options} {listener.server_options}"
            lines.append(f"    server {backend.name} {backend.host}:{backend.port} {options}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ServerState:
    listener: str
    server: str
    status: str  # UP, DOWN, DRAIN, MAINT, "DOWN (agent)", ...
    weight: int
    sessions: int  # current sessions (scur)
    total: int  # sessions so far (stot)
    check: str  # last check's status and description
    agent: str  # last agent-check's status and description


@dataclass(frozen=True)
class Transition:
    monotonic: float
    wall: float
    listener: str
    server: str
    status: str
    check: str
    agent: str


@dataclass(frozen=True)
class Session:
    """One client session as HAProxy logged it."""

    accepted: float  # epoch seconds (ms resolution)
    counter: int  # HAProxy's session counter (%rt): accept order
    listener: str
    server: str  # "<NOSRV>" when none was chosen
    client_port: int
    connect_ms: int  # -1: the connection to the server failed
    total_ms: int
    termination: str  # %ts: "--" normal, "SC" server refused/failed, "CD" client closed, ...


class HAProxyError(RuntimeError):
    pass


class HAProxy:
    """`with HAProxy(listeners) as lb:` runs haproxy until the block ends."""

    def __init__(
        self,
        listeners: Sequence[Listener],
        inter: str = "1s",
        check_timeout: str = "1s",
        watch_every: float = 0.05,
    ) -> None:
        self.listeners = list(listeners)
        self.dir = tempfile.mkdtemp(prefix="galera-health-haproxy-")
        self.config_path = os.path.join(self.dir, "haproxy.cfg")
        self.socket_path = os.path.join(self.dir, "stats.sock")
        self.log_path = os.path.join(self.dir, "haproxy.log")
        self.sections = render(self.listeners, inter, check_timeout)
        with open(self.config_path, "w") as handle:
            handle.write(
                "global\n"
                "    nbthread 1\n"
                f"    stats socket {self.socket_path} mode 600 level admin\n"
                "    log stdout format raw local0\n\n" + self.sections
            )
        self.process: subprocess.Popen[bytes] | None = None
        self._watch_every = watch_every
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._transitions: list[Transition] = []
        self._lock = threading.Lock()
        _LIVE.add(self)

    # ---------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 15.0) -> HAProxy:
        checked = subprocess.run(
            [HAPROXY, "-c", "-f", self.config_path],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if checked.returncode != 0:
            raise HAProxyError(
                f"haproxy rejected its config:\n{checked.stdout}{checked.stderr}\n{self.sections}"
            )
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [HAPROXY, "-db", "-f", self.config_path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise HAProxyError(f"haproxy exited ({self.process.returncode}):\n{self.output()}")
            try:
                self.states()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise HAProxyError(
                        f"no stats socket after {timeout} s:\n{self.output()}"
                    ) from None
                time.sleep(0.05)
        self._watcher = threading.Thread(target=self._watch, name="haproxy-watch", daemon=True)
        self._watcher.start()
        return self

    def stop(self) -> None:
        """SIGTERM (a hard stop: no waiting for sessions), SIGKILL after 10 s; remove the dir."""
        self._watch_stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
        _LIVE.discard(self)

    def __enter__(self) -> HAProxy:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ reading

    def port(self, listener: str) -> int:
        for candidate in self.listeners:
            if candidate.name == listener:
                return candidate.port
        raise KeyError(listener)

    def command(self, line: str, timeout: float = 5.0) -> str:
        """One command on the stats socket (`show stat`, `show servers state`, ...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.socket_path)
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def _info(self, field: str) -> int:
        for line in self.command("show info").splitlines():
            name, _, value = line.partition(":")
            if name == field:
                return int(value)
        raise HAProxyError(f"no {field} in show info")

    def dropped_logs(self) -> int:
        """Log lines HAProxy could not write (`show info` DroppedLogs): sessions lost to us."""
        return self._info("DroppedLogs")

    def next_counter(self) -> int:
        """The counter (%rt) of the next session: CumReq, which numbers every stream (the stats
        socket's too). Sessions open now, logged only when they end, have a lower one."""
        return self._info("CumReq")

    def states(self) -> dict[tuple[str, str], ServerState]:
        """Every server's state now, keyed by (listener, server)."""
        text = self.command("show stat").lstrip("# ")
        found: dict[tuple[str, str], ServerState] = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("svname") in (None, "FRONTEND", "BACKEND"):
                continue
            key = (row["pxname"], row["svname"])
            found[key] = ServerState(
                listener=row["pxname"],
                server=row["svname"],
                status=row["status"],
                weight=int(row["weight"] or 0),
                sessions=int(row["scur"] or 0),
                total=int(row["stot"] or 0),
                check=f"{row.get('check_status', '')} {row.get('check_desc', '')}".strip(),
                agent=f"{row.get('agent_status', '')} {row.get('agent_desc', '')}".strip(),
            )
        return found

    def wait(
        self,
        predicate: Callable[[dict[tuple[str, str], ServerState]], bool],
        timeout: float,
        what: str,
    ) -> float:
        """Seconds until predicate(states) holds; HAProxyError naming `what` otherwise."""
        started = time.monotonic()
        states = self.states()
        while not predicate(states):
            if time.monotonic() - started > timeout:
                raise HAProxyError(
                    f"not within {timeout} s: {what}; servers now:\n"
                    + "\n".join(
                        f"  {s.listener}/{s.server}: {s.status} ({s.check}; {s.agent})"
                        for s in states.values()
                    )
                )
            time.sleep(0.05)
            states = self.states()
        return time.monotonic() - started

    def wait_status(
        self, server: str, statuses: Sequence[str], timeout: float, listeners: Sequence[str] = ()
    ) -> float:
        """Until `server` has one of `statuses` in every listener (or those named)."""
        names = list(listeners) or [listener.name for listener in self.listeners]
        return self.wait(
            lambda states: all(states[(name, server)].status in statuses for name in names),
            timeout,
            f"{server} {'/'.join(statuses)} in {', '.join(names)}",
        )

    def wait_routed(
        self, server: str, routed: bool, timeout: float, listeners: Sequence[str] = ()
    ) -> float:
        """Until `server` gets new sessions (UP, or "UP 1/2": going down after a first failed
        check, still routed) in every listener (or those named), or until it gets none (DOWN,
        "DOWN 1/2", DRAIN, MAINT, ... whatever took it out)."""
        names = list(listeners) or [listener.name for listener in self.listeners]
        return self.wait(
            lambda states: all(
                states[(n, server)].status.startswith("UP") == routed for n in names
            ),
            timeout,
            f"{server} {'in' if routed else 'out'} in {', '.join(names)}",
        )

    def wait_all_up(self, timeout: float = 30.0) -> float:
        return self.wait(
            lambda states: all(s.status == "UP" for s in states.values()),
            timeout,
            "every server UP",
        )

    def transitions(self) -> list[Transition]:
        """Every status change the watcher saw (the first entry per server is its start)."""
        with self._lock:
            return list(self._transitions)

    def _watch(self) -> None:
        last: dict[tuple[str, str], str] = {}
        while not self._watch_stop.is_set():
            try:
                states = self.states()
            except OSError:
                states = {}
            now, wall = time.monotonic(), time.time()
            for key, state in states.items():
                if last.get(key) != state.status:
                    last[key] = state.status
                    with self._lock:
                        self._transitions.append(
                            Transition(
                                now, wall, key[0], key[1], state.status, state.check, state.agent
                            )
                        )
            self._watch_stop.wait(self._watch_every)

    def sessions(self, since: int = 0) -> list[Session]:
        """Every client session logged so far (HAProxy logs a session when it ends), from the
        one numbered `since` (a `next_counter()` read before them) on."""
        found = []
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) != 9 or parts[0] != "session":
                    continue
                found.append(
                    Session(
                        accepted=float(parts[1]),
                        counter=int(parts[2]),
                        listener=parts[3],
                        server=parts[4],
                        client_port=int(parts[5]),
                        connect_ms=int(parts[6]),
                        total_ms=int(parts[7]),
                        termination=parts[8],
                    )
                )
        return sorted(
            (session for session in found if session.counter >= since),
            key=lambda session: session.counter,
        )

    def output(self) -> str:
        """HAProxy's own lines (warnings, server state changes), without the session lines."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return "".join(line for line in handle if not line.startswith("session "))
        except OSError as exc:
            return f"(no log: {exc})"


@dataclass
class _Live:
    """HAProxy processes not stopped yet, stopped at interpreter exit whatever happened."""

    items: weakref.WeakSet[HAProxy] = field(default_factory=weakref.WeakSet)

    def add(self, item: HAProxy) -> None:
        self.items.add(item)

    def discard(self, item: HAProxy) -> None:
        self.items.discard(item)


_LIVE = _Live()


@atexit.register
def _stop_leftovers() -> None:
    for item in list(_LIVE.items):
        with contextlib.suppress(Exception):
            item.stop()
