"""`galera-health demo fault ACTION NODE` against a demo's control (the session cluster stands in
for the demo's own): faults by node name, still right after the node restarted with a new PID."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from galera_health import demo as demo_module
from galera_health.demo import STATE_FILE, DemoControl
from galera_health.testbed import GaleraTestbed, free_ports
from testkit.agent import ServerProcess, run_cli

pytestmark = pytest.mark.galera


@pytest.fixture
def demo(synced_cluster: GaleraTestbed, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The control of a running demo; the environment that points the CLI at it."""
    control = DemoControl(synced_cluster, str(tmp_path / "run"))
    control.start()
    try:
        yield {"GALERA_DEMO_RUNTIME_DIR": control.directory}
    finally:
        control.close()
    assert not (tmp_path / "run" / STATE_FILE).exists()


def process_state(pid: int | None) -> str:
    assert pid is not None
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]  # R, S, T (stopped), ...


def fault(env: dict[str, str], action: str, node: str) -> str:
    done = run_cli("demo", "fault", action, node, env=env, timeout=200)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{action} {node}: "), done.stdout
    return done.stdout


def test_faults_by_node_name_survive_a_restart(
    synced_cluster: GaleraTestbed, demo: dict[str, str]
) -> None:
    n3 = synced_cluster.node("n3")
    fault(demo, "freeze", "n3")
    assert process_state(n3.pid) == "T" and n3.frozen
    fault(demo, "thaw", "n3")
    assert process_state(n3.pid) != "T" and not n3.frozen

    fault(demo, "desync", "n3")
    assert n3.status("wsrep_desync") == "ON"
    fault(demo, "resync", "n3")
    assert n3.status("wsrep_desync") == "OFF"

    old_pid = n3.pid
    fault(demo, "stop", "n3")
    assert not n3.is_running()
    fault(demo, "start", "n3")
    assert n3.is_running() and n3.pid != old_pid
    # the printed PID of the old process would now fail; the name still works
    fault(demo, "freeze", "n3")
    assert process_state(n3.pid) == "T"
    fault(demo, "thaw", "n3")
    assert process_state(n3.pid) != "T"


def test_mistakes_are_one_line_and_exit_2(demo: dict[str, str], tmp_path: Path) -> None:
    unknown_node = run_cli("demo", "fault", "freeze", "n9", env=demo)
    assert unknown_node.returncode == 2
    assert unknown_node.stderr == (
        "galera-health demo: no node 'n9' in the demo; one of: n1, n2, n3\n"
    )
    unknown_fault = run_cli("demo", "fault", "melt", "n3", env=demo)
    assert unknown_fault.returncode == 2
    assert unknown_fault.stderr.startswith("galera-health demo: unknown fault 'melt'; one of: ")
    no_demo = run_cli("demo", "fault", "freeze", "n3", env={"GALERA_DEMO_RUNTIME_DIR": "/nope"})
    assert no_demo.returncode == 2
    assert no_demo.stderr == (
        "galera-health demo: no demo running (no live /nope/demo.json); start one with"
        " ./scripts/demo\n"
    )


def test_demo_agents_elect_one_writer(
    synced_cluster: GaleraTestbed, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's agents, as the demo starts them (its account, its command line), elect one
    writer; the others name it; the guide says where to look."""
    user = demo_module.writer_account(synced_cluster)
    ports = free_ports(len(synced_cluster.nodes))
    # a short drain: the stop releases the lease at once and does not wait out 11 s
    short_drain = ["--drain-seconds", "0.2"]
    agents = [
        ServerProcess(
            [*demo_module.agent_command(node, synced_cluster, port, user), *short_drain],
            port,
            name=f"demo-{node.name}",
        )
        for node, port in zip(synced_cluster.nodes, ports, strict=True)
    ]
    try:
        deadline = time.monotonic() + 45
        while True:
            answers = {a.name.removeprefix("demo-"): a.get("/writer") for a in agents}
            writers = [name for name, answer in answers.items() if answer.status == 200]
            if len(writers) == 1 and all(
                answer.status == 503 and f"standby (writer: {writers[0]})" in answer.body
                for name, answer in answers.items()
                if name != writers[0]
            ):
                break
            assert time.monotonic() < deadline, f"no single writer within 45 s: {answers}"
            time.sleep(0.2)
    finally:
        for agent in agents:
            agent.stop()

    demo_module.print_guide(synced_cluster, ports, free_ports(1)[0])
    guide = capsys.readouterr().out
    assert all(f"127.0.0.1:{port}/writer" in guide for port in ports), guide


def test_the_guides_maintenance_and_check_commands_work_on_the_demos_agents(
    synced_cluster: GaleraTestbed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's agents have a state_dir (its config file): the guide's `maintenance` commands
    take a node out and back, and its `check` line (user and password file named) exits 0."""
    config = demo_module.write_config(synced_cluster, str(tmp_path))
    user = demo_module.writer_account(synced_cluster)
    node = synced_cluster.nodes[-1]
    ports = free_ports(len(synced_cluster.nodes) + 1)
    agent = ServerProcess(
        [*demo_module.agent_command(node, synced_cluster, ports[-2], user, config),
         "--drain-seconds", "0.2"],
        ports[-2],
        name=f"demo-{node.name}",
    )  # fmt: skip
    try:
        agent.wait_for(lambda a: a.status == 200, timeout=45)
        demo_module.print_guide(synced_cluster, ports[:-1], ports[-1], config)
        guide = capsys.readouterr().out
        commands = [
            shlex.split(line)[1:]
            for line in guide.splitlines()
            if line.strip().startswith(("galera-health maintenance", "galera-health check"))
        ]
        assert [c[:2] for c in commands] == [
            ["maintenance", "on"], ["maintenance", "status"], ["maintenance", "off"],
            ["check", "--config"],
        ], guide  # fmt: skip
        for command in commands:
            done = run_cli(*command, timeout=60)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            if command[:2] == ["maintenance", "on"]:
                _, answer = agent.wait_for(lambda a: a.status == 503, timeout=10)
                assert answer.body.startswith(f"{node.name}: maintenance (trying"), answer
            elif command[:2] == ["maintenance", "status"]:
                assert done.stdout.startswith(f"maintenance.{node.name}: maintenance"), done
            elif command[:2] == ["maintenance", "off"]:
                agent.wait_for(lambda a: a.status == 200, timeout=30)
            else:
                assert done.stdout.count(": synced") == len(synced_cluster.nodes), done.stdout
    finally:
        agent.stop()


def test_a_demo_started_in_the_background_stops_on_sigint(tmp_path: Path) -> None:
    """A script's `galera-health demo &` inherits SIGINT ignored; the demo restores it, so
    Ctrl-C (or kill -INT) still stops it and removes its files. A 1-node demo: the cheapest."""
    log = tmp_path / "demo.log"
    env = {**os.environ, "GALERA_DEMO_RUNTIME_DIR": str(tmp_path / "run")}
    with open(log, "w") as output:
        demo = subprocess.Popen(
            [sys.executable, "-m", "galera_health", "demo", "--size", "1",
             "--port", str(free_ports(1)[0])],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as `&` does
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C stops" not in log.read_text():
            assert demo.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert (tmp_path / "run" / STATE_FILE).exists()
        os.kill(demo.pid, signal.SIGINT)
        assert demo.wait(timeout=90) == 0, log.read_text()
        assert "Stopping ..." in log.read_text()
        assert not (tmp_path / "run" / STATE_FILE).exists()
    finally:
        if demo.poll() is None:
            demo.terminate()  # SIGTERM: the demo's own stop, as before
            try:
                demo.wait(timeout=90)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
