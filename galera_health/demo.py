"""`galera-health demo`: a local Galera cluster with one agent per node, to watch verdicts change;
`galera-health demo fault ACTION NODE` breaks or mends a node of the running demo by name.

Built on the same test bed the integration tests use. Everything it starts it stops on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from types import FrameType

from .lease_sql import GRANTS
from .testbed import GaleraTestbed, TestbedError, TestbedNode, free_ports, missing_requirements

RESTART_AFTER = 15.0
# The per-node agents elect a writer (/writer) through an account of its own with the lease's
# grants (writer_user); the monitor account keeps USAGE only, as the README sets both up. (The
# demo gives both the monitor's password, from one file; the README gives each its own.)
WRITER_USER = "health_writer"


def writer_account(testbed: GaleraTestbed) -> str:
    """The per-node agents' writer_user: the monitor's password, the lease's grants."""
    testbed.create_account(WRITER_USER, GRANTS)
    return WRITER_USER


def agent_ports(first: int, count: int) -> list[int]:
    """`first`, `first+1`, ... when free; otherwise free ports chosen by the kernel."""
    import socket

    wanted = list(range(first, first + count))
    for port in wanted:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return free_ports(count)
    return wanted


CONFIG_FILE = "agents.toml"


def write_config(testbed: GaleraTestbed, directory: str) -> str:
    """The demo's agents' config, as deploy/systemd/agent.toml is a VM agent's: a state_dir (so
    that `galera-health maintenance` can be tried) and the node names, which that command checks
    `--node` against. The rest comes as flags."""
    state_dir = os.path.join(directory, "state")
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(directory, CONFIG_FILE)
    lines = [
        "# galera-health demo: read by every agent of the demo and by `galera-health maintenance`",
        f"state_dir = {json.dumps(state_dir)}",
        "",
        "[nodes]",
        *(f"{node.name} = {json.dumps(node.address())}" for node in testbed.nodes),
    ]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def agent_command(
    node: TestbedNode, testbed: GaleraTestbed, port: int, user: str, config: str | None = None
) -> list[str]:
    """One node's agent, taking part in the writer election as `user` (the lease's grants);
    its health polls run as the USAGE-only monitor account. `config`: the demo's config file
    (its state_dir); the --node flag wins over its [nodes]."""
    return [
        sys.executable,
        "-m",
        "galera_health",
        "serve",
        *(["--config", config] if config else []),
        "--node",
        f"{node.name}={node.address()}",
        "--listen",
        f"127.0.0.1:{port}",
        "--user",
        testbed.monitor_user,
        "--password-file",
        testbed.password_file,
        "--writer",
        "--writer-user",
        user,
        "--writer-password-file",
        testbed.password_file,
    ]


# ---------------------------------------------------------------- faults by node name

# Not GALERA_HEALTH_*: the agents the demo starts reject unknown variables of their own prefix.
RUNTIME_DIR_ENV = "GALERA_DEMO_RUNTIME_DIR"
STATE_FILE = "demo.json"
CONTROL_SOCKET = "control.sock"


def runtime_dir() -> str:
    """Where a running demo leaves its state file and control socket (one demo at a time)."""
    configured = os.environ.get(RUNTIME_DIR_ENV)
    if configured:
        return configured
    if os.geteuid() == 0 and os.path.isdir("/run"):
        return "/run/galera-health-demo"
    return os.path.join(tempfile.gettempdir(), f"galera-health-demo-{os.geteuid()}")


def _sql(statement: str) -> Callable[[TestbedNode], None]:
    def run(node: TestbedNode) -> None:
        node.sql(statement)

    return run


# action -> (what it does, how); the pairs undo each other
FAULTS: dict[str, tuple[str, Callable[[TestbedNode], None]]] = {
    "freeze": ("SIGSTOP mariadbd: TCP still accepted, nothing answers", TestbedNode.freeze),
    "thaw": ("SIGCONT: it answers again (evicted meanwhile if frozen past evs.suspect_timeout)",
             TestbedNode.thaw),
    "split": ("cut its group communication (gmcast.isolate=1): non-Primary once the others "
              "evict it (about evs.suspect_timeout, PT3S here, plus 1-2 s)",
              lambda node: node.isolate(True)),
    "heal": ("restore its group communication: it rejoins", lambda node: node.isolate(False)),
    "desync": ("SET GLOBAL wsrep_desync=ON", _sql("SET GLOBAL wsrep_desync=ON")),
    "resync": ("SET GLOBAL wsrep_desync=OFF", _sql("SET GLOBAL wsrep_desync=OFF")),
    "readonly": ("SET GLOBAL read_only=ON", _sql("SET GLOBAL read_only=ON")),
    "writable": ("SET GLOBAL read_only=OFF", _sql("SET GLOBAL read_only=OFF")),
    "stop": ("clean shutdown of mariadbd (the demo starts it again after "
             f"{RESTART_AFTER:.0f} s)", TestbedNode.stop),
    "start": ("start a stopped node now; it rejoins (IST)", TestbedNode.start),
}  # fmt: skip


class DemoControl:
    """Applies faults by node name for `galera-health demo fault ACTION NODE`, which finds the
    running demo through the state file in `directory` and asks over its unix socket: the node
    objects (and their current PIDs) live in the demo's process, so a restarted node is still
    the same name."""

    def __init__(
        self, testbed: GaleraTestbed, directory: str, agents: dict[str, str] | None = None
    ) -> None:
        self.testbed = testbed
        self.directory = directory
        self.agents = agents or {}
        self.lock = threading.Lock()  # one node operation at a time (the restarter too)
        self.state_file = os.path.join(directory, STATE_FILE)
        self.socket_path = os.path.join(directory, CONTROL_SOCKET)
        self._server: socketserver.UnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        other = _running_demo(self.state_file)
        if other is not None:
            raise TestbedError(
                f"another demo is running (pid {other}, {self.state_file}); stop it first"
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        control = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    request = json.loads(self.rfile.readline(4096))
                    ok, message = control.apply(str(request["action"]), str(request["node"]))
                except (ValueError, KeyError, TypeError) as exc:
                    ok, message = False, f"bad request: {exc}"
                self.wfile.write((json.dumps({"ok": ok, "message": message}) + "\n").encode())

        self._server = socketserver.UnixStreamServer(self.socket_path, Handler)
        os.chmod(self.socket_path, 0o600)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-control", daemon=True
        )
        self._thread.start()
        self.write_state()

    def apply(self, action: str, name: str) -> tuple[bool, str]:
        if action not in FAULTS:
            return False, f"unknown fault {action!r}; one of: {', '.join(FAULTS)}"
        names = [node.name for node in self.testbed.nodes]
        if name not in names:
            return False, f"no node {name!r} in the demo; one of: {', '.join(names)}"
        node = self.testbed.node(name)
        with self.lock:
            try:
                FAULTS[action][1](node)
            except TestbedError as exc:
                return False, f"{action} {name} failed: {exc}"
            finally:
                self.write_state()
        print(f"demo: {action} {name}: {FAULTS[action][0]}", flush=True)
        return True, f"{action} {name}: {FAULTS[action][0]}"

    def write_state(self) -> None:
        """The state file: who runs the demo, where to ask, and each node's current PID."""
        state = {
            "pid": os.getpid(),
            "control": self.socket_path,
            "base_dir": self.testbed.base_dir,
            "nodes": {
                node.name: {
                    "pid": node.pid,
                    "frozen": node.frozen,
                    "mysql": node.address(),
                    "socket": node.socket,
                    "agent": self.agents.get(node.name),
                }
                for node in self.testbed.nodes
            },
        }
        temporary = self.state_file + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(state, handle, indent=2)
        os.replace(temporary, self.state_file)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for path in (self.state_file, self.socket_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _running_demo(state_file: str) -> int | None:
    """The PID of the demo that wrote `state_file`, if it still runs."""
    try:
        with open(state_file) as handle:
            pid = int(json.load(handle)["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid


def run_fault(action: str, name: str) -> int:
    """`galera-health demo fault ACTION NODE`: ask the running demo; one line, exit 0 or 2."""
    directory = runtime_dir()
    state_file = os.path.join(directory, STATE_FILE)
    if action not in FAULTS:
        print(f"galera-health demo: unknown fault {action!r}; one of: {', '.join(FAULTS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    if _running_demo(state_file) is None:
        print(
            f"galera-health demo: no demo running (no live {state_file}); start one with "
            "./scripts/demo",
            file=sys.stderr,
        )
        return 2
    with open(state_file) as handle:
        socket_path = str(json.load(handle)["control"])
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(180)  # a start waits for the node to rejoin
            client.connect(socket_path)
            client.sendall((json.dumps({"action": action, "node": name}) + "\n").encode())
            reply = json.loads(client.makefile("rb").readline())
    except (OSError, ValueError) as exc:
        print(f"galera-health demo: cannot reach the demo at {socket_path}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    if not reply["ok"]:
        print(f"galera-health demo: {reply['message']}", file=sys.stderr)
        return 2
    print(reply["message"])
    return 0


# ---------------------------------------------------------------------------- the demo


def print_guide(
    testbed: GaleraTestbed, ports: list[int], all_port: int, config: str | None = None
) -> None:
    print("\nA 3-node MariaDB Galera cluster is running, with an agent in front of each node.\n")
    for node, port in zip(testbed.nodes, ports, strict=True):
        print(f"  {node.name}: MySQL {node.address()} (socket {node.socket})")
        print(f"      http://127.0.0.1:{port}/health  /writer  /readyz  /livez  /status  /metrics")
    print(f"  all nodes: http://127.0.0.1:{all_port}/health  (200 only when every node is usable)")
    print(f"             http://127.0.0.1:{all_port}/status")
    print(f"  status page (open in a browser): http://127.0.0.1:{all_port}/")
    node = testbed.nodes[-1]
    port = ports[-1]
    print(
        f"\nWatch one node:  watch -n0.5 curl -s -w '%{{http_code}}\\\\n' 127.0.0.1:{port}/health"
    )
    print(
        f"\nBreak {node.name} (or any node, by name) from another terminal and watch its verdict"
        " change (transitions are logged here):"
    )
    for first, second in (("freeze", "thaw"), ("split", "heal"), ("desync", "resync"),
                          ("readonly", "writable"), ("stop", "start")):  # fmt: skip
        command = f"galera-health demo fault {first} {node.name}"
        print(f"  {command:36} undo: {second:9} {FAULTS[first][0]}")
    print("  (`galera-health` is .venv/bin/galera-health in this checkout)")
    writers = " ".join(f"127.0.0.1:{port}/writer" for port in ports)
    print(
        "\nOne node at a time answers 200 on /writer (the others 503, naming it); its own page"
        "\n(/ on its port) marks it WRITER. Freeze, split or stop that node: the role moves within"
        "\na few seconds, and stays where it went when the node comes back:"
    )
    print(f"  for u in {writers}; do curl -s -w ' %{{http_code}}\\n' $u; done")
    if config is not None:
        print(
            f"\nTake {node.name} out by hand, as the README's maintenance runbook does (503"
            " 'maintenance' at once, on its page and on the all-nodes page; the agents' config"
            " has the state_dir and the node names):"
        )
        print(
            f'  galera-health maintenance on --node {node.name} --config {config} --reason "trying"'
        )
        print(f"  galera-health maintenance status --config {config}")
        print(f"  galera-health maintenance off --node {node.name} --config {config}")
    print(
        "\nPoll every node once, as an exec probe or a Nagios check would (exit 0 all healthy, 1 a"
        f" node unhealthy), as the monitor account {testbed.monitor_user!r} (USAGE only):"
    )
    print(
        f"  galera-health check --config {config} --user {testbed.monitor_user}"
        f" --password-file {testbed.password_file}"
        if config is not None
        else "  galera-health check "
        + " ".join(f"--node {n.name}={n.address()}" for n in testbed.nodes)
        + f" --user {testbed.monitor_user} --password-file {testbed.password_file}"
    )
    print("\nCtrl-C stops the agents and the cluster and removes its files.\n", flush=True)


def run_demo(size: int = 3, first_port: int = 9200) -> int:
    problem = missing_requirements()
    if problem is not None:
        print(
            f"galera-health demo: {problem}; run ./scripts/demo (it installs them)", file=sys.stderr
        )
        return 2

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    # A demo started in the background from a script inherits SIGINT ignored (the shell does
    # that for `&`); Python then keeps it ignored. Ctrl-C / kill -INT must stop it anyway.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    testbed = GaleraTestbed(size=size)
    agents: list[subprocess.Popen[bytes]] = []
    control: DemoControl | None = None
    try:
        print(f"Starting a {size}-node Galera cluster under {testbed.base_dir} ...", flush=True)
        started = time.monotonic()
        testbed.start()
        print(f"Cluster Synced after {time.monotonic() - started:.0f} s.", flush=True)
        ports = agent_ports(first_port, size + 1)
        user = writer_account(testbed)
        config = write_config(testbed, testbed.base_dir)
        for node, port in zip(testbed.nodes, ports, strict=False):
            # own session: Ctrl-C reaches us alone, and we stop the agents in order
            agents.append(
                subprocess.Popen(
                    agent_command(node, testbed, port, user, config), start_new_session=True
                )
            )
        agents.append(all_nodes_agent(testbed, ports[-1], config))
        pages = zip(testbed.nodes, ports[:-1], strict=True)
        control = DemoControl(
            testbed, runtime_dir(), {n.name: f"http://127.0.0.1:{p}/" for n, p in pages}
        )
        control.start()
        time.sleep(1.5)
        print_guide(testbed, ports[:-1], ports[-1], config)
        down_since: dict[str, float] = {}
        while True:
            time.sleep(1)
            for node in testbed.nodes:
                if node.is_running():
                    down_since.pop(node.name, None)
                    continue
                since = down_since.setdefault(node.name, time.monotonic())
                if time.monotonic() - since >= RESTART_AFTER:
                    print(f"demo: restarting {node.name} ...", flush=True)
                    with control.lock:
                        try:
                            if not node.is_running():  # not started meanwhile by `fault start`
                                node.start()
                            print(f"demo: {node.name} is up again", flush=True)
                        except TestbedError as exc:
                            print(f"demo: could not restart {node.name}: {exc}", flush=True)
                        control.write_state()
                    down_since.pop(node.name, None)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0
    except TestbedError as exc:
        print(f"galera-health demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if control is not None:
            control.close()
        for agent in agents:
            if agent.poll() is None:
                os.kill(agent.pid, signal.SIGINT)  # at once: SIGTERM would drain for 11 s
        for agent in agents:
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
        testbed.stop()


def all_nodes_agent(testbed: GaleraTestbed, port: int, config: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "galera_health", "serve", "--config", config]
    command += ["--listen", f"127.0.0.1:{port}"]
    for node in testbed.nodes:
        command += ["--node", f"{node.name}={node.address()}"]
    command += ["--user", testbed.monitor_user, "--password-file", testbed.password_file]
    command += ["--log-level", "error"]  # the per-node agents already log each transition
    return subprocess.Popen(command, start_new_session=True)
