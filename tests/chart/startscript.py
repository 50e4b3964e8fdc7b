"""Running the reference StatefulSet's rendered start.sh on this machine.

The script runs unmodified under bash, in a private mount namespace whose /etc/hosts maps the
peers' StatefulSet DNS names to loopback addresses (127.0.0.2, ...), where the tests put fake peer
agents (tiny HTTP servers answering /health) or nothing at all. Its data, run and bootstrap
directories are the GALERA_* paths it reads; the image's entrypoint is replaced by a stand-in
that records the mariadbd arguments the script decided on (the one piece of the image that is
not on this machine).

Shared by tests/chart/test_start_script.py and tests/integration/test_chart_contract.py.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .helm import NAMESPACE, Helm

STATEFULSET = "db-galera-health"
HEADLESS = f"{STATEFULSET}-headless.{NAMESPACE}.svc"
ENTRYPOINT = """#!/bin/sh
# Stand-in for the mariadb image's docker-entrypoint.sh: record what start.sh handed over.
printf '%s\\n' "$@" > "$GALERA_RUNDIR/entrypoint-args"
"""


def render_start_script(helm: Helm, values: Sequence[Path], sets: Sequence[str] = ()) -> str:
    rendered = helm.render(values, sets)
    script: str = rendered.one("ConfigMap", f"{STATEFULSET}-galera")["data"]["start.sh"]
    return script


def peer_address(ordinal: int) -> str:
    return f"127.0.0.{ordinal + 2}"


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b"local: synced\n" if self.status == 200 else b"local: joining\n"
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def fake_peers(statuses: dict[int, int], port: int) -> Iterator[None]:
    """An HTTP server per peer ordinal on 127.0.0.<ordinal+2>:port answering /health."""
    servers: list[ThreadingHTTPServer] = []
    try:
        for ordinal, status in statuses.items():
            handler = type("PeerHandler", (_Handler,), {"status": status})
            server = ThreadingHTTPServer((peer_address(ordinal), port), handler)
            servers.append(server)
            threading.Thread(target=server.serve_forever, daemon=True).start()
        yield
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@dataclass
class Node:
    """One pod's view: its data directory, run directory and bootstrap ConfigMap directory."""

    base: Path
    hostname: str = f"{STATEFULSET}-0"
    force_bootstrap_pod: str = ""
    datadir: Path = field(init=False)
    rundir: Path = field(init=False)
    bootstrap_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.datadir = self.base / "data"
        self.rundir = self.base / "run"
        self.bootstrap_dir = self.base / "bootstrap"
        for directory in (self.datadir, self.rundir, self.bootstrap_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def grastate(self, seqno: int, safe_to_bootstrap: int, uuid: str) -> None:
        (self.datadir / "mysql").mkdir(exist_ok=True)
        (self.datadir / "grastate.dat").write_text(
            "# GALERA saved state\nversion: 2.1\n"
            f"uuid:    {uuid}\nseqno:   {seqno}\nsafe_to_bootstrap: {safe_to_bootstrap}\n"
        )


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str
    args: list[str] | None  # what the entrypoint got; None if the script never got there

    @property
    def bootstraps(self) -> bool:
        assert self.args is not None, self.output
        return "--wsrep-new-cluster" in self.args


def run_start_script(
    script: str,
    node: Node,
    agent_port: int,
    replicas: int = 3,
    bootstrap_ordinal: int = 0,
    extra_path: str = "",
    timeout: float = 60,
) -> Outcome:
    (node.bootstrap_dir / "force-bootstrap-pod").write_text(node.force_bootstrap_pod)
    script_path = node.base / "start.sh"
    script_path.write_text(script)
    bin_dir = node.base / "bin"
    bin_dir.mkdir(exist_ok=True)
    entrypoint = bin_dir / "docker-entrypoint.sh"
    entrypoint.write_text(ENTRYPOINT)
    entrypoint.chmod(0o755)
    hosts = node.base / "hosts"
    hosts.write_text(
        "127.0.0.1 localhost\n"
        + "".join(f"{peer_address(i)} {STATEFULSET}-{i}.{HEADLESS}\n" for i in range(replicas))
    )
    (node.rundir / "entrypoint-args").unlink(missing_ok=True)
    env = {
        "PATH": f"{bin_dir}:{extra_path}/usr/bin:/bin",
        "HOSTNAME": node.hostname,
        "POD_IP": "127.0.0.1",
        "STATEFULSET": STATEFULSET,
        "HEADLESS": HEADLESS,
        "REPLICAS": str(replicas),
        "BOOTSTRAP_ORDINAL": str(bootstrap_ordinal),
        "AGENT_PORT": str(agent_port),
        "MARIADB_ROOT_PASSWORD": "ci-root-password",
        "GALERA_DATADIR": str(node.datadir),
        "GALERA_RUNDIR": str(node.rundir),
        "GALERA_BOOTSTRAP_DIR": str(node.bootstrap_dir),
    }
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    inner = (
        f"mount --bind {shlex.quote(str(hosts))} /etc/hosts && "
        f"exec bash {shlex.quote(str(script_path))}"
    )
    result = subprocess.run(
        [unshare, "--mount", "/bin/sh", "-c", inner],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    recorded = node.rundir / "entrypoint-args"
    args = recorded.read_text().splitlines() if recorded.exists() else None
    return Outcome(result.returncode, result.stdout + result.stderr, args)


def mount_namespace_available() -> bool:
    try:
        return (
            subprocess.run(
                ["unshare", "--mount", "true"], capture_output=True, timeout=30, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False
