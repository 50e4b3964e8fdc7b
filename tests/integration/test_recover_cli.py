"""`galera-health recover` against real agents whose mysqld is down (a closed port), each with
a datadir written the way Galera leaves it: the agents' background job reads the files, the
CLI asks every /recovery and decides. Exit 0 decided, 1 refused, 2 usage error.
(The same on real Galera nodes after real crashes: test_whole_cluster_recovery.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from galera_health.recovery import RECOVERED_LOG
from galera_health.testbed import free_ports
from testkit.agent import AgentProcess, run_cli

A = "4c2c9a3e-0b1e-11ef-8b7c-6f2d2d0b0b0b"


def write_grastate(datadir: Path, seqno: int, safe: int = 0) -> None:
    (datadir / "mysql").mkdir(parents=True, exist_ok=True)
    (datadir / "grastate.dat").write_text(
        f"# GALERA saved state\nversion: 2.1\nuuid:    {A}\nseqno:   {seqno}\n"
        f"safe_to_bootstrap: {safe}\n"
    )


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[dict[str, tuple[AgentProcess, Path]]]:
    """n1..n3, mysqld down, datadirs at seqno 10, -1 recovered as 12, and 11."""
    closed = free_ports(3)
    with ExitStack() as stack:
        found: dict[str, tuple[AgentProcess, Path]] = {}
        for index, name in enumerate(("n1", "n2", "n3")):
            datadir = tmp_path / name
            datadir.mkdir()
            found[name] = (
                stack.enter_context(
                    AgentProcess(
                        [f"{name}=127.0.0.1:{closed[index]}"],
                        "health",
                        None,
                        ["--datadir", str(datadir), "--interval", "1"],
                        name=f"recover-{name}",
                    )
                ),
                datadir,
            )
        write_grastate(tmp_path / "n1", 10)
        write_grastate(tmp_path / "n2", -1)
        (tmp_path / "n2" / RECOVERED_LOG).write_text(
            f"2026-12-07 [Note] WSREP: Recovered position: {A}:12\n"
        )
        write_grastate(tmp_path / "n3", 11, safe=1)
        for name, (agent, _) in found.items():
            agent.wait_for(lambda a, n=name: datadir_read_answer(a, n), "/recovery", timeout=15)
        yield found


def datadir_read_answer(answer: object, name: str) -> bool:
    status = getattr(answer, "status", 0)
    body = getattr(answer, "body", "")
    if status != 200:
        return False
    node = json.loads(body)["nodes"][name]
    return node["error"] is None and node["empty"] is False


def agent_flags(agents: dict[str, tuple[AgentProcess, Path]]) -> list[str]:
    flags: list[str] = []
    for name, (agent, _) in agents.items():
        flags += ["--agent", f"{name}=http://127.0.0.1:{agent.port}"]
    return flags


def test_recover_picks_the_highest_position_and_prints_the_vm_command(
    agents: dict[str, tuple[AgentProcess, Path]],
) -> None:
    run = run_cli("recover", *agent_flags(agents))
    assert run.returncode == 0, run
    lines = run.stdout.strip().splitlines()
    assert lines[0].split() == ["node", "uuid", "seqno", "safe_to_bootstrap", "running", "Primary"]
    assert lines[2].split()[:4] == ["n2", A, "12", "(recovered)"], run.stdout
    assert lines[-1].startswith("bootstrap n2: highest position"), run.stdout
    # n2's grastate.dat says safe_to_bootstrap: 0: the command sets it first
    assert "safe_to_bootstrap: 1/' /var/lib/mysql/grastate.dat && galera_new_cluster" in lines[-1]
    assert "mariadbd --wsrep-new-cluster" in lines[-1]

    document = json.loads(run_cli("recover", "--json", *agent_flags(agents)).stdout)
    assert document["decision"]["action"] == "bootstrap" and document["decision"]["node"] == "n2"
    assert [row["seqno"] for row in document["nodes"]] == [10, 12, 11]
    assert [row["running"] for row in document["nodes"]] == [False, False, False]


def test_recover_refuses_while_a_node_cannot_be_asked_unless_assumed_lost(
    agents: dict[str, tuple[AgentProcess, Path]],
) -> None:
    agents["n2"][0].stop()
    run = run_cli("recover", *agent_flags(agents))
    assert run.returncode == 1, run
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("refuse: cannot ask n2") and "--assume-lost" in last, last
    lost = run_cli("recover", *agent_flags(agents), "--assume-lost", "n2")
    assert lost.returncode == 0, lost
    assert lost.stdout.strip().splitlines()[-1].startswith("bootstrap n3:"), lost.stdout
    # n3 is safe_to_bootstrap: 1, so the command is the plain one
    assert "&& galera_new_cluster" not in lost.stdout and "galera_new_cluster" in lost.stdout


def test_recover_refuses_an_unknown_position(
    agents: dict[str, tuple[AgentProcess, Path]],
) -> None:
    (agents["n2"][1] / RECOVERED_LOG).unlink()
    agent = agents["n2"][0]
    agent.wait_for(
        lambda a: json.loads(a.body)["nodes"]["n2"]["position"] is None, "/recovery", timeout=15
    )
    run = run_cli("recover", *agent_flags(agents))
    assert run.returncode == 1, run
    assert "refuse: the position of n2 is unknown" in run.stdout, run.stdout
    assert "--wsrep-recover" in run.stdout


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ((), "--agent"),
        (("--agent", "n1"), "NAME=URL"),
        (("--agent", "n1=http://127.0.0.1:1", "--assume-lost", "n9"), "--assume-lost n9"),
        (("--agent", "n1=http://127.0.0.1:1", "--token-file", "/nonexistent"), "--token-file"),
    ],
)
def test_recover_usage_errors_exit_2(args: tuple[str, ...], text: str) -> None:
    run = run_cli("recover", *args)
    assert run.returncode == 2, run
    assert text in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_recover_with_the_status_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    datadir = tmp_path / "data"
    write_grastate(datadir, 5, safe=1)
    port = free_ports(1)[0]
    with AgentProcess(
        [f"n1=127.0.0.1:{port}"],
        "health",
        None,
        ["--datadir", str(datadir), "--status-token-file", str(token)],
        name="recover-token",
    ) as agent:
        flags = ["--agent", f"n1=http://127.0.0.1:{agent.port}"]
        assert agent.get("/recovery").status == 401
        refused = run_cli("recover", *flags)
        assert refused.returncode == 1 and "HTTP 401" in refused.stdout, refused
        assert "s3cret" not in refused.stdout + refused.stderr
        run = run_cli("recover", *flags, "--token-file", str(token))
        assert run.returncode == 0, run
        assert run.stdout.strip().splitlines()[-1].startswith("bootstrap n1:"), run.stdout


def test_an_agent_with_recovery_peers_serves_the_same_decision(
    agents: dict[str, tuple[AgentProcess, Path]], tmp_path: Path
) -> None:
    peers = ",".join(f"{n}=http://127.0.0.1:{a.port}" for n, (a, _) in agents.items())
    datadir = agents["n1"][1]
    with AgentProcess(
        [f"n1=127.0.0.1:{free_ports(1)[0]}"],
        "health",
        None,
        ["--datadir", str(datadir), "--recovery-peers", peers],
        name="recover-peers",
    ) as agent:
        _, answer = agent.wait_for(
            lambda a: a.status == 200 and json.loads(a.body)["decision"] is not None,
            "/recovery",
            timeout=20,
        )
        decision = json.loads(answer.body)["decision"]
        cli = json.loads(run_cli("recover", "--json", *agent_flags(agents)).stdout)["decision"]
        assert (
            (decision["action"], decision["node"])
            == (cli["action"], cli["node"])
            == (
                "bootstrap",
                "n2",
            )
        )
        assert decision["line"] == cli["line"].split("; on n2 run:")[0]
