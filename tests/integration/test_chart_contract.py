"""Contract between the Helm chart and the agent, proven against the real 3-node Galera test bed.

The chart is rendered (reference StatefulSet on); the agent runs with the ConfigMap's TOML,
changed only where a pod and this machine differ (listen host, the node's socket, the password
file, the state dir); then the test asks exactly the paths and ports that the rendered
readiness/startup/liveness probes and the Azure probe annotations name:
200 when healthy, 503 after a fault, 503 maintenance while the rendered preStop runs, 503
draining after SIGTERM and a clean exit 0. The agent's config, mounted as a directory the way
the kubelet writes a ConfigMap volume, reloads live when the rendered values change. The
reference start script, on a node of the test bed killed with SIGKILL, recovers the node's real
position with mariadbd --wsrep-recover.

A setting these tests rely on that is renamed (in the chart or in the agent) fails them: they
index rendered objects and the agent's KEYS directly, and never skip for a missing key.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from galera_health.config import KEYS
from galera_health.testbed import GaleraTestbed, free_ports
from testkit.agent import AgentProcess, Answer

from ..chart.helm import CHART, Helm, Rendered, helm_or_skip
from ..chart.startscript import Node, start_script, stop_script, wait_output

pytestmark = pytest.mark.galera

VALUES = CHART / "ci" / "reference-statefulset-values.yaml"
NAME = "db-galera-health"
ANNOTATION = "service.beta.kubernetes.io/port_{port}_health-probe_{what}"


@dataclass(frozen=True)
class Probe:
    """One HTTP GET that something outside the agent will make, as the chart renders it."""

    who: str
    path: str
    port: int


def probes_of(rendered: Rendered) -> list[Probe]:
    """Every HTTP probe the chart wires to the agent: kubelet probes and the Azure LB probe."""
    pod = rendered.one("StatefulSet")["spec"]["template"]["spec"]
    found: list[Probe] = []
    for container in pod["containers"]:
        for kind in ("readinessProbe", "startupProbe", "livenessProbe"):
            if kind in container:
                get = container[kind]["httpGet"]
                found.append(Probe(f"{container['name']} {kind}", get["path"], int(get["port"])))
    # Azure: annotation port -> the probe NodePort Service -> its targetPort on the pod
    lb = rendered.one("Service", NAME)
    annotations = lb["metadata"]["annotations"]
    lb_port = lb["spec"]["ports"][0]["port"]
    node_port = int(annotations[ANNOTATION.format(port=lb_port, what="port")])
    assert annotations[ANNOTATION.format(port=lb_port, what="protocol")] == "Http"
    probe_service = rendered.one("Service", f"{NAME}-probe")
    (port,) = [p for p in probe_service["spec"]["ports"] if p["nodePort"] == node_port]
    path = annotations[ANNOTATION.format(port=lb_port, what="request-path")]
    found.append(Probe("Azure LB probe", path, int(port["targetPort"])))
    return found


def prestop_script(rendered: Rendered) -> str:
    pod = rendered.one("StatefulSet")["spec"]["template"]["spec"]
    (db,) = [c for c in pod["containers"] if c["name"] == "mariadb"]
    command = db["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    script: str = command[2]
    return script


def localize(toml: str, replacements: dict[str, str]) -> str:
    """Replace whole `key = value` lines; each key must appear exactly once."""
    for key, value in replacements.items():
        pattern = re.compile(rf"^{re.escape(key)} = .*$", re.MULTILINE)
        assert len(pattern.findall(toml)) == 1, f"{key} not once in the rendered TOML"
        toml = pattern.sub(f"{key} = {value}", toml)
    return toml


class ConfigAgent(AgentProcess):
    """The agent started only with `serve --config FILE` (no flags), as the sidecar runs it."""

    def __init__(self, config: Path, port: int, status_port: int) -> None:
        self.port = port
        self.status_port = status_port
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the agent
            prefix="galera-health-chart-agent-", suffix=".log", delete=False
        )
        self._final_output = None
        self.command = [sys.executable, "-m", "galera_health", "serve", "--config", str(config)]
        self.process = subprocess.Popen(
            self.command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("GALERA_HEALTH_")},
            start_new_session=True,
        )
        self.wait_for(lambda a: a.status in (200, 503), "/livez", timeout=15)

    def status(self) -> dict[str, Any]:
        """/status answers on the status listener (the chart's agent.status.port), never on the
        probe port the nodePort exposes."""
        assert self.get("/status").status == 404, "/status must not be on the probe port"
        connection = http.client.HTTPConnection("127.0.0.1", self.status_port, timeout=5)
        try:
            connection.request("GET", "/status")
            response = connection.getresponse()
            assert response.status == 200, response.status
            document: dict[str, Any] = json.loads(response.read())
        finally:
            connection.close()
        return document


@pytest.fixture
def helm() -> Helm:
    return helm_or_skip()


def test_the_settings_these_tests_rely_on_exist() -> None:
    """Renamed in the agent: fail here, never skip."""
    for key in ("listen", "password_file", "state_dir", "drain_seconds", "available_when_donor"):
        assert key in KEYS, f"the chart renders {key}, which the agent no longer knows"


def localized_toml(
    rendered: Rendered, ports: tuple[int, int], cluster: GaleraTestbed, state_dir: Path
) -> str:
    """The rendered agent.toml with only what differs between a pod and this machine changed."""
    config: dict[str, Any] = rendered.agent_config()
    (node_name,) = config["nodes"]
    port, status_port = ports
    toml = localize(
        rendered.agent_toml(),
        {
            "listen": f'"127.0.0.1:{port}"',
            "status_listen": f'"127.0.0.1:{status_port}"',
            "password_file": f'"{cluster.password_file}"',
            "state_dir": f'"{state_dir}"',
            node_name: f'"{cluster.node("n1").socket}"',
        },
    )
    assert config["listen"] == f"0.0.0.0:{port}"
    assert config["status_listen"] == "0.0.0.0:9202"  # the chart's default: off the probe port
    changed = set(rendered.agent_toml().splitlines()) ^ set(toml.splitlines())
    assert len(changed) == 10, changed  # 5 lines out, 5 in; every other line as rendered
    return toml


def publish(config_dir: Path, toml: str) -> Path:
    """Write agent.toml the way the kubelet updates a ConfigMap volume mounted as a directory
    (no subPath): a new timestamped directory, then one atomic swap of the ..data symlink;
    agent.toml itself is a symlink through ..data."""
    config_dir.mkdir(exist_ok=True)
    version = config_dir / f"..{time.time_ns()}"
    version.mkdir()
    (version / "agent.toml").write_text(toml)
    staged = config_dir / "..data_tmp"
    staged.unlink(missing_ok=True)
    staged.symlink_to(version.name)
    os.replace(staged, config_dir / "..data")
    link = config_dir / "agent.toml"
    if not link.is_symlink():
        link.symlink_to("..data/agent.toml")
    return link


def render_for_test(helm: Helm, port: int, cluster: GaleraTestbed, *sets: str) -> Rendered:
    # what an operator sets at install time: the agent port and the monitor account's name
    return helm.render(
        [VALUES], [f"agent.port={port}", f"agent.user={cluster.monitor_user}", *sets]
    )


# The drain tests check the mechanism (the rendered preStop and drain_seconds are honoured), not
# the reference durations (15 s; their sizing is test_chart.py's): short ones save ~20 s a run.
SHORT_DRAIN = ("agent.drainSeconds=4", "drain.preStopSleepSeconds=4")


@pytest.fixture
def rendered_agent(
    helm: Helm, synced_cluster: GaleraTestbed, tmp_path: Path
) -> Iterator[tuple[Rendered, ConfigAgent, Path]]:
    with running_rendered(helm, synced_cluster, tmp_path) as found:
        yield found


@pytest.fixture
def short_drain_agent(
    helm: Helm, synced_cluster: GaleraTestbed, tmp_path: Path
) -> Iterator[tuple[Rendered, ConfigAgent, Path]]:
    with running_rendered(helm, synced_cluster, tmp_path, *SHORT_DRAIN) as found:
        yield found


@contextlib.contextmanager
def running_rendered(
    helm: Helm, synced_cluster: GaleraTestbed, tmp_path: Path, *sets: str
) -> Iterator[tuple[Rendered, ConfigAgent, Path]]:
    """The agent as the chart renders it (with `sets`), run on this machine."""
    port, status_port = free_ports(2)
    rendered = render_for_test(helm, port, synced_cluster, *sets)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    toml = localized_toml(rendered, (port, status_port), synced_cluster, state_dir)
    agent = ConfigAgent(publish(tmp_path / "config", toml), port, status_port)
    try:
        yield rendered, agent, state_dir
    finally:
        agent.stop()


def ask_all(agent: AgentProcess, probes: list[Probe]) -> dict[str, Answer]:
    return {p.who: agent.get(p.path) for p in probes}


def test_rendered_probes_ask_the_agent_200_healthy_503_after_a_fault(
    rendered_agent: tuple[Rendered, ConfigAgent, Path], synced_cluster: GaleraTestbed
) -> None:
    rendered, agent, _ = rendered_agent
    probes = probes_of(rendered)
    assert {p.port for p in probes} == {agent.port}, probes  # all name the agent's listen port
    verdict = [p for p in probes if p.who != "galera-health livenessProbe"]
    liveness = [p for p in probes if p.who == "galera-health livenessProbe"]
    assert {p.path for p in verdict} == {"/readyz", "/health"} and liveness[0].path == "/livez"

    agent.wait_for(lambda a: a.status == 200, verdict[0].path, timeout=20)
    for who, answer in ask_all(agent, probes).items():
        assert answer.status == 200, (who, answer)
        assert answer.seconds < 1.0, (who, answer)  # kubelet's timeoutSeconds is 1

    node = synced_cluster.node("n1")
    node.isolate(True)
    try:
        for probe in verdict:
            _, answer = agent.wait_for(lambda a: a.status == 503, probe.path, timeout=30)
            assert "non_primary" in answer.body or "disconnected" in answer.body, answer
        # liveness never follows the database
        assert agent.get(liveness[0].path).status == 200
    finally:
        node.isolate(False)
    for probe in verdict:
        agent.wait_for(lambda a: a.status == 200, probe.path, timeout=90)


def test_rendered_prestop_drain_takes_the_node_out_then_clears(
    short_drain_agent: tuple[Rendered, ConfigAgent, Path],
) -> None:
    rendered, agent, state_dir = short_drain_agent
    probes = [p for p in probes_of(rendered) if p.path != "/livez"]
    agent.wait_for(lambda a: a.status == 200, probes[0].path, timeout=20)
    pod_dir = rendered.agent_config()["state_dir"]
    script = prestop_script(rendered)
    assert f"{pod_dir}/maintenance" in script
    sleep = int(re.search(r"sleep (\d+)", script).group(1))  # type: ignore[union-attr]
    # the rendered preStop, only the state dir mapped to this machine's
    started = time.monotonic()
    prestop = subprocess.Popen(["/bin/sh", "-c", script.replace(pod_dir, str(state_dir))])
    try:
        for probe in probes:
            _, answer = agent.wait_for(lambda a: a.status == 503, probe.path, timeout=5)
            assert "maintenance" in answer.body and "preStop" in answer.body, answer
        assert time.monotonic() - started < 2.0  # about 0.5 s: well inside the preStop's wait
        time.sleep(min(3.0, sleep / 2))
        for probe in probes:  # still out while the preStop waits
            assert agent.get(probe.path).status == 503
        assert prestop.wait(timeout=sleep + 10) == 0
    finally:
        if prestop.poll() is None:
            prestop.kill()
            prestop.wait()
    assert time.monotonic() - started >= sleep
    # the preStop cleared its file: a restarted container does not stay in maintenance
    assert not (state_dir / "maintenance").exists()
    agent.wait_for(lambda a: a.status == 200, probes[0].path, timeout=10)


def test_sigterm_drains_with_503_for_drain_seconds_then_exits_0(
    short_drain_agent: tuple[Rendered, ConfigAgent, Path],
) -> None:
    rendered, agent, _ = short_drain_agent
    probes = [p for p in probes_of(rendered) if p.path != "/livez"]
    drain_seconds = float(rendered.agent_config()["drain_seconds"])
    agent.wait_for(lambda a: a.status == 200, probes[0].path, timeout=20)
    started = time.monotonic()
    os.kill(agent.pid, signal.SIGTERM)  # what the kubelet sends the sidecar on pod deletion
    for probe in probes:
        _, answer = agent.wait_for(lambda a: a.status == 503, probe.path, timeout=2)
        assert "draining" in answer.body, answer
    assert agent.process.wait(timeout=drain_seconds + 10) == 0
    assert time.monotonic() - started >= drain_seconds - 0.5


def policy_of(agent: AgentProcess) -> dict[str, Any]:
    (node,) = agent.status()["nodes"].values()
    policy: dict[str, Any] = node["policy"]
    return policy


def test_changed_values_reach_the_running_agent_through_the_directory_mount(
    helm: Helm,
    rendered_agent: tuple[Rendered, ConfigAgent, Path],
    synced_cluster: GaleraTestbed,
    tmp_path: Path,
) -> None:
    """`helm upgrade --set agent.availableWhenDonor=false`: the kubelet swaps the ConfigMap's
    ..data, the agent reloads (no pod restart), and its policy changes."""
    rendered, agent, state_dir = rendered_agent
    assert rendered.agent_config()["available_when_donor"] is True  # the reference default
    agent.wait_for(lambda a: a.status == 200, "/health", timeout=20)
    assert policy_of(agent)["available_when_donor"] is True
    upgraded = render_for_test(helm, agent.port, synced_cluster, "agent.availableWhenDonor=false")
    ports = (agent.port, agent.status_port)
    publish(tmp_path / "config", localized_toml(upgraded, ports, synced_cluster, state_dir))
    deadline = time.monotonic() + 20
    while policy_of(agent)["available_when_donor"] is not False:
        assert time.monotonic() < deadline, agent.output()
        time.sleep(0.2)
    assert agent.process.poll() is None  # the same process: reloaded, not restarted
    assert agent.get("/health").status == 200


def test_start_script_finds_a_killed_nodes_position_with_wsrep_recover(
    helm: Helm, synced_cluster: GaleraTestbed
) -> None:
    """After a crash grastate.dat says seqno -1; with no peer running the rendered start.sh runs
    the real mariadbd --wsrep-recover on the node's datadir, prints its real position and leaves
    the log in the datadir for its agent (then waits for the agent's decision)."""
    script = helm.render([VALUES]).one("ConfigMap", "db-galera-health-galera")["data"]["start.sh"]
    writer, victim = synced_cluster.node("n1"), synced_cluster.node("n3")
    writer.sql("CREATE DATABASE IF NOT EXISTS chart_contract_recover")
    writer.sql("DROP DATABASE chart_contract_recover")
    expected_uuid = writer.status("wsrep_cluster_state_uuid")
    expected_seqno = writer.status("wsrep_last_committed")
    deadline = time.monotonic() + 30
    while victim.status("wsrep_last_committed") != expected_seqno:
        assert time.monotonic() < deadline, "n3 did not apply the last write"
        time.sleep(0.1)
    base = Path(tempfile.mkdtemp(prefix="galera-health-start-"))
    base.chmod(0o755)
    victim.kill()
    try:
        grastate = Path(victim.datadir, "grastate.dat").read_text()
        assert re.search(r"^seqno:\s+-1$", grastate, re.MULTILINE), grastate
        node = Node(base, hostname="db-galera-health-2")
        node.datadir = Path(victim.datadir)
        node.rundir.chmod(0o777)  # mariadbd (--user=mysql) writes its recovery log there
        tools = base / "tools"
        tools.mkdir()
        wrapper = tools / "mariadbd"
        # this machine's mariadbd with the node's own config, as the image's my.cnf would be
        wrapper.write_text(
            "#!/bin/sh\n"
            f"exec {shutil.which('mariadbd', path='/usr/sbin:/usr/bin') or '/usr/sbin/mariadbd'}"
            f' --defaults-file={victim.config_file} --user=mysql "$@"\n'
        )
        wrapper.chmod(0o755)
        process, output = start_script(
            script, node, free_ports(1)[0], extra_path=f"{tools}:", galera_peers="127.0.0.3:1"
        )
        try:
            seen = wait_output(process, output, "(uuid:seqno) of", timeout=180)
        finally:
            stop_script(process)
        assert f"position {expected_uuid}:{expected_seqno} " in seen, seen
        # the log stays in the datadir, where the node's agent reads the position (datadir)
        assert "Recovered position" in Path(victim.datadir, "wsrep-recover.log").read_text()
        assert not (node.rundir / "entrypoint-args").exists()  # no agent decided: it waits
    finally:
        victim.start()
        victim.wait_synced()
        shutil.rmtree(base, ignore_errors=True)
