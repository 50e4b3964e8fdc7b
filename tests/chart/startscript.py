"""Running the reference StatefulSet's rendered start.sh on this machine.

The script runs unmodified under bash, in a private mount namespace whose /etc/hosts maps the
peers' StatefulSet DNS names to loopback addresses (127.0.0.2, ...). It asks its agent's
/recovery on 127.0.0.1:STATUS_PORT (the tests run real agents there, `galera-health serve` with
datadir and recovery_peers: see PodAgents) and probes the peers' Galera ports (GALERA_PEERS
names them here, where every node of the test bed has its own port). Its data, run and
bootstrap directories are the GALERA_* paths it reads; the image's entrypoint is replaced by a
stand-in that records the mariadbd arguments the script decided on (the one piece of the image
that is not on this machine).

Shared by tests/chart/test_start_script.py and tests/integration/test_chart_contract.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from galera_health.testbed import free_ports
from testkit.agent import ServerProcess

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


class PodAgents:
    """One real agent per pod (`galera-health serve`), each with its pod's datadir and
    recovery_peers naming every pod's agent, behind a status token: what the chart renders,
    on loopback ports. `nodes` maps each pod to its mysqld address (a closed port: mysqld down)."""

    def __init__(
        self,
        datadirs: dict[str, Path],
        nodes: dict[str, str],
        token: Path,
        user: str = "health",
        extra: dict[str, list[str]] | None = None,
    ) -> None:
        self.ports = dict(zip(datadirs, free_ports(len(datadirs)), strict=True))
        self.token = token.read_text().strip()
        peers = ",".join(f"{pod}=http://127.0.0.1:{port}" for pod, port in self.ports.items())
        self.agents: dict[str, ServerProcess] = {}
        self._commands: dict[str, list[str]] = {}
        for pod, port in self.ports.items():
            self._commands[pod] = [
                sys.executable, "-m", "galera_health", "serve",
                "--listen", f"127.0.0.1:{port}",
                "--node", f"local={nodes[pod]}",
                "--user", user,
                "--datadir", str(datadirs[pod]),
                "--recovery-peers", peers,
                "--status-token-file", str(token),
                "--interval", "1",
                "--drain-seconds", "0",
                *(extra or {}).get(pod, []),
            ]  # fmt: skip
        try:
            for pod in self.ports:
                self.start(pod)
        except BaseException:
            self.stop()
            raise

    def start(self, pod: str) -> None:
        agent = ServerProcess(self._commands[pod], self.ports[pod], name=f"agent-{pod}")
        self.agents[pod] = agent
        agent.wait_for(lambda a: a.status in (200, 503), "/livez", timeout=20)

    def stop(self, pod: str | None = None) -> None:
        for name in [pod] if pod else list(self.agents):
            agent = self.agents.pop(name, None)
            if agent is not None:
                agent.stop()

    def recovery(self, pod: str) -> dict[str, Any] | None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[pod]}/recovery",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                document: dict[str, Any] = json.loads(answer.read())
                return document
        except (OSError, ValueError):
            return None

    def wait_decided(
        self, pod: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        """Until pod's agent publishes a decision for which check(decision) holds."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            document = self.recovery(pod)
            last = document["decision"] if document else None
            if last is not None and check(last):
                return last
            time.sleep(0.2)
        raise AssertionError(f"{pod}: no such decision within {timeout} s; last: {last}")


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
        """Writes grastate.dat whole (a new file renamed over the old one, as Galera does):
        an agent reading it meanwhile sees the old file or the new one, never a torn one."""
        (self.datadir / "mysql").mkdir(exist_ok=True)
        written = self.base / "grastate.dat.new"
        written.write_text(
            "# GALERA saved state\nversion: 2.1\n"
            f"uuid:    {uuid}\nseqno:   {seqno}\nsafe_to_bootstrap: {safe_to_bootstrap}\n"
        )
        written.replace(self.datadir / "grastate.dat")


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str
    args: list[str] | None  # what the entrypoint got; None if the script never got there

    @property
    def bootstraps(self) -> bool:
        assert self.args is not None, self.output
        return "--wsrep-new-cluster" in self.args


def start_script(
    script: str,
    node: Node,
    status_port: int,
    replicas: int = 3,
    extra_path: str = "",
    galera_peers: str = "",
    status_token: str = "",
) -> tuple[subprocess.Popen[str], Path]:
    """start.sh running for `node` (output in the returned file); see run_start_script."""
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
        "BOOTSTRAP_ORDINAL": "0",
        "AGENT_PORT": str(status_port),
        "STATUS_PORT": str(status_port),
        "GALERA_WAIT_SECONDS": "0.5",
        "MARIADB_ROOT_PASSWORD": "ci-root-password",
        "GALERA_DATADIR": str(node.datadir),
        "GALERA_RUNDIR": str(node.rundir),
        "GALERA_BOOTSTRAP_DIR": str(node.bootstrap_dir),
    }
    if galera_peers:
        env["GALERA_PEERS"] = galera_peers
    if status_token:
        env["STATUS_TOKEN"] = status_token
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    inner = (
        f"mount --bind {shlex.quote(str(hosts))} /etc/hosts && "
        f"exec bash {shlex.quote(str(script_path))}"
    )
    output = node.base / "start.out"
    with open(output, "w") as sink:
        process = subprocess.Popen(
            [unshare, "--mount", "/bin/sh", "-c", inner],
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
    return process, output


def stop_script(process: subprocess.Popen[str]) -> None:
    """Ends a script still waiting (and its sleep/timeout children: its own session)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def run_start_script(
    script: str, node: Node, status_port: int, timeout: float = 60, **options: Any
) -> Outcome:
    """Runs start.sh to its end (the exec of the entrypoint): the script decided."""
    process, output = start_script(script, node, status_port, **options)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_script(process)
        raise AssertionError(
            f"start.sh did not decide within {timeout} s:\n{output.read_text()}"
        ) from None
    recorded = node.rundir / "entrypoint-args"
    args = recorded.read_text().splitlines() if recorded.exists() else None
    return Outcome(process.returncode, output.read_text(), args)


def wait_output(
    process: subprocess.Popen[str], output: Path, text: str, timeout: float = 30
) -> str:
    """Until the running script has printed `text` (it is still waiting, not decided)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = output.read_text()
        if text in seen:
            return seen
        if process.poll() is not None:
            raise AssertionError(f"start.sh ended ({process.returncode}) without {text!r}:\n{seen}")
        time.sleep(0.1)
    raise AssertionError(
        f"start.sh did not print {text!r} within {timeout} s:\n{output.read_text()}"
    )


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
