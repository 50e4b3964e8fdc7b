"""Start and stop a local N-node MariaDB Galera cluster on free loopback ports.

Used by ``galera-health demo``, by the integration tests and by the benchmarks.
Only the standard library and the Debian packages ``mariadb-server``,
``galera-4`` and ``rsync`` are needed; the caller must be root (``mariadbd`` is
started with ``--user=mysql``, the ``mariadb`` CLI logs in as root over the
unix socket).

Every node reads only its own option file (``--defaults-file``), so nothing
from ``/etc/mysql`` leaks in.  Every wait is bounded and every failure raises
:class:`TestbedError` with a readable message (for a node that would not
start: the tail of its error log).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "GaleraTestbed",
    "TestbedError",
    "TestbedNode",
    "ephemeral_range",
    "free_ports",
    "missing_requirements",
]

PROVIDER = "/usr/lib/galera/libgalera_smm.so"
CLUSTER_NAME = "galera_health_testbed"
DEFAULT_PROVIDER_OPTIONS = "evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S"
POLL_INTERVAL = 0.25
SYSTEM_USER = "mysql"
# sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


class TestbedError(RuntimeError):
    """A test bed operation failed or did not finish in time."""

    __test__ = False  # not a pytest test class


def _find_binary(name: str, *fallbacks: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in fallbacks:
        if os.access(candidate, os.X_OK):
            return candidate
    raise TestbedError(f"{name} not found (install the Debian package mariadb-server)")


def missing_requirements() -> str | None:
    """Why a test bed cannot start here (one line naming what to install), or None."""
    for name in ("mariadbd", "mariadb-install-db", "mariadb", "rsync"):
        if shutil.which(name) is None and not os.access(f"/usr/sbin/{name}", os.X_OK):
            return f"{name} not found (Debian packages: mariadb-server galera-4 rsync)"
    if not os.path.exists(PROVIDER):
        return f"{PROVIDER} not found (Debian package: galera-4)"
    if os.geteuid() != 0:
        return "the test bed must run as root (it starts mariadbd as user mysql)"
    return None


LISTEN_PORTS_FROM = 10000  # below it: well-known services (3306, 4567, 8080, 9200, ...)
_EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of local ports for outgoing connections (Linux default 32768-60999)."""
    try:
        with open(_EPHEMERAL_RANGE_FILE) as handle:
            low, high = (int(part) for part in handle.read().split())
    except (OSError, ValueError):
        return (32768, 60999)
    return (low, high)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct ports that were free on ``host`` a moment ago.

    The ports lie outside the kernel's ephemeral range (read at each call): a port from that
    range, chosen now and listened on later (the SST and IST ports only when a node joins), can
    meanwhile be the local port of any outgoing connection on the machine; rsync SST then fails
    with "Device or resource busy". Outside it only another listener can take the port. Picks
    are random, so test sessions running in parallel rarely try the same port, and each is
    checked by binding it (without SO_REUSEADDR, so a port in TIME_WAIT is not taken either).
    All are held until every port is chosen, so they are distinct.
    """
    low, high = ephemeral_range()
    pools = [range(LISTEN_PORTS_FROM, low), range(high + 1, 65536)]
    pools = [pool for pool in pools if len(pool) > 0]
    if not pools:  # an ephemeral range covering everything: nowhere safer to go
        pools = [range(LISTEN_PORTS_FROM, 65536)]
    total = sum(len(pool) for pool in pools)
    rng = random.SystemRandom()
    held: list[socket.socket] = []
    chosen: list[int] = []
    try:
        for _ in range(200 * count):
            if len(chosen) == count:
                break
            index = rng.randrange(total)
            for pool in pools:
                if index < len(pool):
                    port = pool[index]
                    break
                index -= len(pool)
            if port in chosen:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            chosen.append(port)
        if len(chosen) < count:
            raise TestbedError(
                f"found only {len(chosen)} of {count} free ports on {host} outside the "
                f"ephemeral range {low}-{high}"
            )
        return chosen
    finally:
        for sock in held:
            sock.close()


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            data = handle.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(data.splitlines()[-lines:])


def _head(path: str, lines: int = 8) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(16384).decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(data.splitlines()[:lines])


def _unescape_batch(value: str) -> str:
    """Undo the escaping of the ``mariadb`` CLI in batch mode (without --raw)."""
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    mapping = {"n": "\n", "t": "\t", "0": "\0", "\\": "\\"}
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append(mapping.get(nxt, "\\" + nxt))
        else:
            out.append(char)
    return "".join(out)


def _sql_string(value: str) -> str:
    """Quote ``value`` as an SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _chown_mysql(path: str) -> None:
    shutil.chown(path, user=SYSTEM_USER, group=SYSTEM_USER)


@dataclass(eq=False)  # identity semantics: hashable, kept in a WeakSet
class TestbedNode:
    """One ``mariadbd`` of a :class:`GaleraTestbed`."""

    __test__ = False  # not a pytest test class

    name: str
    host: str
    port: int
    socket: str
    datadir: str
    gcomm_port: int
    ist_port: int
    sst_port: int
    pid: int | None = None
    node_dir: str = ""
    config_file: str = ""
    error_log: str = ""
    console_log: str = ""
    tmpdir: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    _frozen: bool = field(default=False, repr=False, compare=False)

    # ------------------------------------------------------------------ info

    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def frozen(self) -> bool:
        return self._frozen and self.is_running()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the error log (and of stdout/stderr if it has any)."""
        tail = _tail(self.error_log, 400)
        errors = [line for line in tail.splitlines() if "[ERROR]" in line][-5:]
        parts = [*errors, f"--- {self.error_log} ---", "\n".join(tail.splitlines()[-lines:])]
        if (
            self.console_log
            and os.path.exists(self.console_log)
            and os.path.getsize(self.console_log)
        ):
            parts += [f"--- {self.console_log} ---", _tail(self.console_log, 10)]
        return "\n".join(parts)

    # ------------------------------------------------------------- lifecycle

    def start(
        self, timeout: float = 120, *, bootstrap: bool = False, options: Sequence[str] = ()
    ) -> None:
        """(Re)start this node and wait until it answers on its unix socket.

        It joins the running cluster (IST or SST); it is not necessarily
        Synced when this returns.  ``bootstrap=True`` starts a new cluster
        (``--wsrep-new-cluster``) and marks the node's ``grastate.dat`` safe to
        bootstrap: only for the first node of a fully stopped cluster. ``options``: extra
        mariadbd options for this start only (e.g. ``--wsrep-sst-donor=n1``).
        """
        self._launch(bootstrap=bootstrap, options=options)
        self.wait_answering(timeout)

    def _launch(self, *, bootstrap: bool = False, options: Sequence[str] = ()) -> None:
        """Start mariadbd without waiting for it."""
        if self.is_running():
            raise TestbedError(f"{self.name}: already running (pid {self.pid})")
        self._reap()
        if bootstrap:
            self._mark_safe_to_bootstrap()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        cmd = [
            _find_binary("mariadbd", "/usr/sbin/mariadbd"),
            f"--defaults-file={self.config_file}",
            f"--user={SYSTEM_USER}",
        ]
        if bootstrap:
            cmd.append("--wsrep-new-cluster")
        cmd += list(options)
        with open(self.console_log, "ab") as console:
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise TestbedError(f"{self.name}: cannot run {cmd[0]}: {exc}") from exc
        self.pid = self._proc.pid
        self._frozen = False
        _register(self)

    def wait_answering(self, timeout: float = 120) -> None:
        """Wait until ``SELECT 1`` works over the unix socket."""
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                self._reap()
                raise TestbedError(
                    f"{self.name}: mariadbd exited (code {code}) before answering\n"
                    + self.log_tail()
                )
            if os.path.exists(self.socket):
                try:
                    self.sql("SELECT 1", timeout=5)
                    return
                except TestbedError as exc:
                    last_error = str(exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TestbedError(
                    f"{self.name}: not answering on {self.socket} after {timeout:.0f} s"
                    f" (last error: {last_error})\n{self.log_tail()}"
                )
            time.sleep(min(POLL_INTERVAL, remaining))

    def stop(self, timeout: float = 60) -> None:
        """Clean shutdown: SIGTERM and wait for the exit.

        A frozen node is thawed first.  If it has not exited within
        ``timeout`` it is killed (SIGKILL) and TestbedError is raised.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._reap()
            return
        if self._frozen:
            self.thaw()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TestbedError(
                f"{self.name}: did not shut down within {timeout:.0f} s; killed it\n"
                + self.log_tail()
            ) from None
        self._reap()

    def kill(self) -> None:
        """SIGKILL mariadbd (and anything it started, such as an SST script) and wait."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                raise TestbedError(
                    f"{self.name}: pid {proc.pid} survived SIGKILL for 15 s"
                ) from None
        self._reap()

    def freeze(self) -> None:
        """SIGSTOP mariadbd: the kernel still accepts TCP, nothing answers."""
        proc = self._require_running("freeze")
        os.kill(proc.pid, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT a frozen mariadbd."""
        proc = self._require_running("thaw")
        os.kill(proc.pid, signal.SIGCONT)
        self._frozen = False

    # ------------------------------------------------------------------- SQL

    def sql(self, statement: str, timeout: float = 10) -> list[list[str]]:
        """Run ``statement`` as root over the unix socket; rows as lists of strings.

        NULL comes back as the string ``"NULL"``.
        """
        cmd = [
            _find_binary("mariadb", "/usr/bin/mariadb", "/usr/bin/mysql"),
            "--no-defaults",
            f"--socket={self.socket}",
            "--user=root",
            "--batch",
            "--skip-column-names",
            f"--connect-timeout={max(1, int(timeout))}",
            "--execute",
            statement,
        ]
        try:
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TestbedError(
                f"{self.name}: SQL timed out after {timeout} s: {statement}"
            ) from None
        except OSError as exc:
            raise TestbedError(f"{self.name}: cannot run {cmd[0]}: {exc}") from exc
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", errors="replace").strip()
            raise TestbedError(f"{self.name}: SQL failed ({err or done.returncode}): {statement}")
        text = done.stdout.decode("utf-8", errors="replace")
        return [[_unescape_batch(cell) for cell in line.split("\t")] for line in text.splitlines()]

    def status(self, name: str) -> str | None:
        """A GLOBAL STATUS (or, failing that, GLOBAL VARIABLES) value; None if absent."""
        return self.statuses([name], timeout=10).get(name)

    def statuses(self, names: list[str], timeout: float = 10) -> dict[str, str]:
        """Several GLOBAL STATUS / VARIABLES values in one round trip (absent ones left out).

        A status value wins over a variable of the same name.
        """
        for name in names:
            if not _NAME_RE.match(name):
                raise TestbedError(f"not a status or variable name: {name!r}")
        wanted = ",".join(_sql_string(n.upper()) for n in names)
        rows = self.sql(
            "SELECT VARIABLE_NAME, VARIABLE_VALUE, 1 FROM information_schema.GLOBAL_STATUS"
            f" WHERE VARIABLE_NAME IN ({wanted}) UNION ALL"
            " SELECT VARIABLE_NAME, VARIABLE_VALUE, 2 FROM information_schema.GLOBAL_VARIABLES"
            f" WHERE VARIABLE_NAME IN ({wanted}) ORDER BY 3 DESC",
            timeout=timeout,
        )
        found = {row[0].lower(): row[1] for row in rows if len(row) >= 2}
        return {name: found[name.lower()] for name in names if name.lower() in found}

    def wait_synced(self, timeout: float = 120) -> None:
        """Wait for wsrep_local_state=4, wsrep_cluster_status=Primary and wsrep_ready=ON."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        names = ["wsrep_local_state", "wsrep_cluster_status", "wsrep_ready"]
        while True:
            if not self.is_running():
                raise TestbedError(
                    f"{self.name}: not running while waiting for Synced\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            try:
                values = self.statuses(names, timeout=max(1.0, min(5.0, remaining)))
                if (
                    values.get("wsrep_local_state") == "4"
                    and values.get("wsrep_cluster_status") == "Primary"
                    and values.get("wsrep_ready") == "ON"
                ):
                    return
                last = ", ".join(f"{n}={values.get(n)}" for n in names)
            except TestbedError as exc:
                last = str(exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TestbedError(
                    f"{self.name}: not Synced/Primary/ready after {timeout:.0f} s ({last})\n"
                    + self.log_tail()
                )
            time.sleep(min(POLL_INTERVAL, remaining))

    def isolate(self, on: bool) -> None:
        """Cut (``on=True``) or restore this node's group communication (gmcast.isolate)."""
        self.sql(f"SET GLOBAL wsrep_provider_options='gmcast.isolate={1 if on else 0}'")

    # -------------------------------------------------------------- helpers

    def _require_running(self, what: str) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise TestbedError(f"{self.name}: cannot {what}, not running")
        return proc

    def _reap(self) -> None:
        """Forget an exited process and kill what is left of its process group."""
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        # start_new_session made mariadbd a group leader; SST scripts and rsync
        # daemons it started may outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._proc = None
        self.pid = None
        self._frozen = False

    def _mark_safe_to_bootstrap(self) -> None:
        path = os.path.join(self.datadir, "grastate.dat")
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            return
        Path(path).write_text(re.sub(r"safe_to_bootstrap:\s*\d", "safe_to_bootstrap: 1", text))


# Nodes still running when the interpreter exits are killed, and the base
# directories the test beds created are removed.
_LIVE_NODES: weakref.WeakSet[TestbedNode] = weakref.WeakSet()
_LIVE_BEDS: weakref.WeakSet[GaleraTestbed] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def _register(node: TestbedNode) -> None:
    with _LIVE_LOCK:
        _LIVE_NODES.add(node)


def _register_bed(bed: GaleraTestbed) -> None:
    with _LIVE_LOCK:
        _LIVE_BEDS.add(bed)


@atexit.register
def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        nodes = list(_LIVE_NODES)
        beds = list(_LIVE_BEDS)
    for node in nodes:
        with contextlib.suppress(Exception):
            node.kill()  # SIGKILL works on a stopped (frozen) process too
    for bed in beds:
        if bed._created_base_dir:
            shutil.rmtree(bed.base_dir, ignore_errors=True)


class GaleraTestbed:
    """A local MariaDB Galera cluster of ``size`` nodes on free loopback ports.

    >>> with GaleraTestbed(3) as bed:          # doctest: +SKIP
    ...     bed.node("n2").kill(); bed.node("n2").start(); bed.node("n2").wait_synced()
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        size: int = 3,
        base_dir: str | None = None,
        host: str = "127.0.0.1",
        provider_options: str = DEFAULT_PROVIDER_OPTIONS,
        monitor_user: str = "health",
        monitor_password: str | None = None,
        extra_config: str = "",
    ) -> None:
        """extra_config: more [mysqld] lines for every node (TLS files, extra_port, ...)."""
        if size < 1:
            raise TestbedError("size must be at least 1")
        self.size = size
        self.host = host
        self.provider_options = provider_options.strip().strip(";")
        self.extra_config = extra_config.strip()
        self.monitor_user = monitor_user
        self.monitor_password = (
            monitor_password if monitor_password is not None else secrets.token_urlsafe(18)
        )
        self._created_base_dir = base_dir is None
        self.base_dir = (
            tempfile.mkdtemp(prefix="galera-testbed-")
            if base_dir is None
            else os.path.abspath(base_dir)
        )
        self.password_file = os.path.join(self.base_dir, "monitor_password")
        self.nodes: list[TestbedNode] = []
        ports = free_ports(4 * size, host)
        for index in range(size):
            name = f"n{index + 1}"
            node_dir = os.path.join(self.base_dir, name)
            client, gcomm, ist, sst = ports[4 * index : 4 * index + 4]
            sock_path = os.path.join(node_dir, "mysqld.sock")
            if len(sock_path.encode()) > _MAX_SOCKET_PATH:
                raise TestbedError(f"socket path too long for a unix socket: {sock_path}")
            self.nodes.append(
                TestbedNode(
                    name=name,
                    host=host,
                    port=client,
                    socket=sock_path,
                    datadir=os.path.join(node_dir, "data"),
                    gcomm_port=gcomm,
                    ist_port=ist,
                    sst_port=sst,
                    node_dir=node_dir,
                    config_file=os.path.join(node_dir, "my.cnf"),
                    error_log=os.path.join(node_dir, "error.log"),
                    console_log=os.path.join(node_dir, "console.log"),
                    tmpdir=os.path.join(node_dir, "tmp"),
                )
            )

    # --------------------------------------------------------------- access

    def node(self, name: str) -> TestbedNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise TestbedError(f"no node {name!r} (have {', '.join(n.name for n in self.nodes)})")

    def cluster_address(self) -> str:
        return "gcomm://" + ",".join(f"{self.host}:{n.gcomm_port}" for n in self.nodes)

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 180) -> None:
        """Create the datadirs, bootstrap n1, start the others, wait until all are Synced,
        then create the monitor user.

        On failure everything started is stopped again before the error is raised.
        """
        if os.geteuid() != 0:
            raise TestbedError("the test bed must run as root (it starts mariadbd --user=mysql)")
        if not os.path.exists(PROVIDER):
            raise TestbedError(
                f"Galera provider {PROVIDER} not found (install the package galera-4)"
            )
        running = [n.name for n in self.nodes if n.is_running()]
        if running:
            raise TestbedError(f"test bed already running ({', '.join(running)})")
        deadline = time.monotonic() + timeout
        _register_bed(self)
        try:
            self._prepare()
            first, rest = self.nodes[0], self.nodes[1:]
            first.start(timeout=self._left(deadline), bootstrap=True)
            first.wait_synced(timeout=self._left(deadline))
            self._start_joiners(rest, deadline)
            for node in self.nodes:
                node.wait_synced(timeout=self._left(deadline))
            self.create_account(self.monitor_user, timeout=self._left(deadline))
        except BaseException:
            self._stop_nodes()
            raise

    def _start_joiners(self, joiners: list[TestbedNode], deadline: float) -> None:
        """Start all joiners at once (each waits for its SST in turn) and wait until they answer."""
        for node in joiners:
            node._launch()
        for node in joiners:
            node.wait_answering(timeout=self._left(deadline))

    def stop(self) -> None:
        """Stop every node (frozen ones are thawed, SIGKILL after 30 s).

        Removes base_dir if this test bed created it.
        """
        self._stop_nodes()
        if self._created_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> GaleraTestbed:
        try:
            self.start()
        except BaseException:
            self.stop()  # __exit__ will not run
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -------------------------------------------------------------- helpers

    @staticmethod
    def _left(deadline: float, what: str = "test bed start") -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TestbedError(f"{what} timed out")
        return remaining

    def _stop_nodes(self) -> None:
        running = [n for n in self.nodes if n.is_running()]
        for node in running:
            proc = node._proc
            if proc is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                if node._frozen:
                    os.kill(proc.pid, signal.SIGCONT)
                    node._frozen = False
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for node in running:
            proc = node._proc
            if proc is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(TestbedError):
                node.kill()

    def _prepare(self) -> None:
        os.makedirs(self.base_dir, exist_ok=True)
        os.chmod(self.base_dir, 0o755)  # mysql must traverse it (mkdtemp makes 0700)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.monitor_password)
        os.chmod(self.password_file, 0o600)
        installs: list[tuple[TestbedNode, subprocess.Popen[bytes], str]] = []
        for node in self.nodes:
            os.makedirs(node.node_dir, exist_ok=True)
            os.chmod(node.node_dir, 0o755)
            _chown_mysql(node.node_dir)
            Path(node.config_file).write_text(self._config(node))
            os.chmod(node.config_file, 0o644)
            # A private tmpdir: a starting mariadbd deletes every "#sql*" file in
            # its tmpdir, which breaks any other server sharing /tmp with it.
            os.makedirs(node.tmpdir, exist_ok=True)
            _chown_mysql(node.tmpdir)
            if os.path.exists(os.path.join(node.datadir, "mysql")):
                continue  # reused base_dir: keep its data
            os.makedirs(node.datadir, exist_ok=True)
            _chown_mysql(node.datadir)
            log = os.path.join(node.node_dir, "install-db.log")
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [
                        _find_binary("mariadb-install-db", "/usr/bin/mariadb-install-db"),
                        "--no-defaults",
                        f"--user={SYSTEM_USER}",
                        f"--datadir={node.datadir}",
                        f"--tmpdir={node.tmpdir}",
                        "--auth-root-authentication-method=socket",
                        "--skip-test-db",
                        "--skip-name-resolve",
                        "--innodb-log-file-size=16M",
                        "--innodb-buffer-pool-size=64M",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            installs.append((node, proc, log))
        errors: list[str] = []
        for node, proc, log in installs:
            try:
                code = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code = -9
            if code != 0:
                errors.append(f"{node.name}: mariadb-install-db failed (code {code})\n{_head(log)}")
        if errors:
            raise TestbedError("\n".join(errors))

    def _config(self, node: TestbedNode) -> str:
        provider_options = ";".join(
            part
            for part in (
                "gcache.size=32M",
                self.provider_options,
                f"gmcast.listen_addr=tcp://{self.host}:{node.gcomm_port}",
                f"ist.recv_addr={self.host}:{node.ist_port}",
            )
            if part
        )
        lines = [
            "[mysqld]",
            f"datadir={node.datadir}",
            f"tmpdir={node.tmpdir}",
            f"socket={node.socket}",
            f"port={node.port}",
            f"bind-address={self.host}",
            f"pid-file={os.path.join(node.node_dir, 'mysqld.pid')}",
            f"log-error={node.error_log}",
            "skip-name-resolve",
            "max_connections=100",
            "innodb_buffer_pool_size=64M",
            "innodb_log_file_size=16M",
            "innodb_flush_log_at_trx_commit=2",
            "default_storage_engine=InnoDB",
            "binlog_format=ROW",
            "innodb_autoinc_lock_mode=2",
            "performance_schema=OFF",
            "wsrep_on=ON",
            f"wsrep_provider={PROVIDER}",
            f"wsrep_cluster_name={CLUSTER_NAME}",
            f"wsrep_cluster_address={self.cluster_address()}",
            f"wsrep_node_name={node.name}",
            f"wsrep_node_address={self.host}:{node.gcomm_port}",
            f"wsrep_node_incoming_address={self.host}:{node.port}",
            "wsrep_sst_method=rsync",
            f"wsrep_sst_receive_address={self.host}:{node.sst_port}",
            f'wsrep_provider_options="{provider_options}"',
            *([self.extra_config] if self.extra_config else []),
            "",
        ]
        return "\n".join(lines)

    def create_account(
        self, user: str, grant: str | tuple[str, ...] = "", timeout: float = 30
    ) -> None:
        """An account with the monitor's password (so the password file serves it too), on the
        test bed's host and localhost, with `grant` (e.g. "SELECT ON db.*") if given; returns when
        every node has it. The monitor account itself has no grant (USAGE suffices for /health)."""
        deadline = time.monotonic() + timeout
        what = f"creating the account {user}"
        password = _sql_string(self.monitor_password)
        statements = []
        for host in (self.host, "localhost"):
            account = f"{_sql_string(user)}@{_sql_string(host)}"
            statements.append(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {password};")
            for one in (grant,) if isinstance(grant, str) else grant:
                if one:
                    statements.append(f"GRANT {one} TO {account};")
        self.nodes[0].sql(" ".join(statements), timeout=min(30.0, self._left(deadline, what)))
        # DDL replicates in total order; wait until every node has applied it.
        check = f"SELECT COUNT(*) FROM mysql.global_priv WHERE User={_sql_string(user)}"
        for node in self.nodes:
            while True:
                rows = node.sql(check, timeout=min(10.0, self._left(deadline, what)))
                if rows and rows[0] and int(rows[0][0]) >= 2:
                    break
                time.sleep(POLL_INTERVAL)
