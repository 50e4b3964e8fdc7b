"""`galera-health demo fault ACTION NODE` against a demo's control (the session cluster stands in
for the demo's own): faults by node name, still right after the node restarted with a new PID."""

from __future__ import annotations

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
