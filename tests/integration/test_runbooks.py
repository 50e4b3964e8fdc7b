"""The docs' maintenance runbooks, run as written against the shipped deploy/systemd/agent.toml
and a real agent on the test bed; the README's preStop as docs/kubernetes.md has it.

Only two things are redirected, both through settings the docs name: the state dir
(GALERA_HEALTH_STATE_DIR, to a temp dir instead of /run/galera-health) and, for the agent and
`check` only, where the node named in the file is, who polls it and where it listens (its
GALERA_HEALTH_* variables). The maintenance commands see the file's node names as they are, so a
runbook naming another node than the shipped file fails here.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from galera_health.config import raw_from_toml
from galera_health.testbed import GaleraTestbed, free_ports
from testkit.agent import ServerProcess, run_cli

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "systemd" / "agent.toml"
INSTALLED = "/etc/galera-health/agent.toml"  # where the unit's install steps put it
RUNBOOK_DOCS = [
    REPO / "README.md",
    REPO / "docs" / "azure-load-balancer.md",
    REPO / "docs" / "haproxy.md",
]


def runbooks(path: Path) -> list[list[list[str]]]:
    """Each ```sh block that runs `galera-health maintenance`: its galera-health commands."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.DOTALL):
        if "galera-health maintenance" not in block:
            continue
        commands = []
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "galera-health":
                commands.append(words[1:])
        found.append(commands)
    return found


def test_every_runbook_names_the_shipped_config_and_its_nodes() -> None:
    names = {node.name for node in raw_from_toml(str(SHIPPED))["nodes"]}
    books = {path.name: runbooks(path) for path in RUNBOOK_DOCS}
    assert all(books.values()), books
    for doc, blocks in books.items():
        for commands in blocks:
            actions = [c[1] for c in commands if c[0] == "maintenance"]
            assert "on" in actions and "off" in actions, (doc, commands)
            for command in commands:
                assert command[command.index("--config") + 1] == INSTALLED, (doc, command)
                if "--node" in command:
                    assert command[command.index("--node") + 1] in names, (doc, command)
                assert "--state-dir" not in command, (doc, command)  # the config says it


@pytest.mark.galera
def test_the_runbooks_run_as_written_against_the_shipped_config(
    synced_cluster: GaleraTestbed, tmp_path: Path
) -> None:
    shipped = raw_from_toml(str(SHIPPED))  # as the agent reads it
    assert shipped["state_dir"] == "/run/galera-health"
    (name,) = [address.name for address in shipped["nodes"]]
    node = synced_cluster.node("n1")
    state = str(tmp_path)
    redirect = {"GALERA_HEALTH_STATE_DIR": state}
    where = {
        "GALERA_HEALTH_NODES": f"{name}={node.address()}",  # the file's node name, kept
        "GALERA_HEALTH_USER": synced_cluster.monitor_user,
        "GALERA_HEALTH_PASSWORD_FILE": synced_cluster.password_file,
    }
    port = free_ports(1)[0]
    agent = ServerProcess(
        [sys.executable, "-m", "galera_health", "serve",
         "--config", str(SHIPPED)],
        port,
        name="runbook-agent",
        env={**redirect, **where, "GALERA_HEALTH_LISTEN": f"127.0.0.1:{port}",
             "GALERA_HEALTH_DRAIN_SECONDS": "0.2"},
    )  # fmt: skip
    try:
        agent.wait_for(lambda a: a.status == 200, timeout=60)
        for doc in RUNBOOK_DOCS:
            for commands in runbooks(doc):
                held = False
                for written in commands:
                    command = [str(SHIPPED) if word == INSTALLED else word for word in written]
                    if command[0] == "check":
                        done = run_cli(*command, env={**redirect, **where}, timeout=60)
                        assert done.returncode == 0, (doc.name, written, done.stdout, done.stderr)
                        continue
                    assert command[0] == "maintenance", (doc.name, written)
                    done = run_cli(*command, env=redirect)
                    assert done.returncode == 0, (doc.name, written, done.stderr)
                    action = command[1]
                    if action == "status":
                        assert (f"maintenance.{name}: " in done.stdout) == held, done.stdout
                    elif action == "on":
                        held = True
                        _, answer = agent.wait_for(lambda a: a.status == 503, timeout=10)
                        assert f"{name}: maintenance" in answer.body, answer
                    else:
                        held = False
                        agent.wait_for(lambda a: a.status == 200, timeout=30)
                assert not held and not list(tmp_path.iterdir()), (doc.name, commands)
    finally:
        agent.stop()


def prestop_scripts(document: Any) -> list[str]:
    """The shell script of every preStop exec hook in a YAML document."""
    found: list[str] = []
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "preStop" and isinstance(value, dict):
                found.append(value["exec"]["command"][-1])
            else:
                found += prestop_scripts(value)
    elif isinstance(document, list):
        for item in document:
            found += prestop_scripts(item)
    return found


def test_the_readme_prestop_is_the_kubernetes_docs() -> None:
    """The README's preStop had no `rm -f` after the sleep: a container restarted without a pod
    deletion stayed in maintenance."""
    kubernetes = (REPO / "docs" / "kubernetes.md").read_text()
    scripts = [
        " ".join(script.split())
        for block in re.findall(r"```yaml\n(.*?)```", kubernetes, re.DOTALL)
        if "preStop" in block and "{{" not in block
        for script in prestop_scripts(yaml.safe_load(block))
    ]
    assert scripts and len(set(scripts)) == 1, scripts
    readme = (REPO / "README.md").read_text()
    (inline,) = re.findall(r"`(echo \"pod terminating[^`]*)`", readme)
    assert " ".join(inline.split()) == scripts[0]
    assert scripts[0].endswith("rm -f /var/run/galera-health/maintenance")


@pytest.mark.galera
def test_the_runbooks_check_exits_0_with_the_agents_rise(
    synced_cluster: GaleraTestbed, tmp_path: Path
) -> None:
    """`check --config agent.toml` (the runbook's "repeat until it exits 0") polls once: a `rise`
    in the agent's config made that one poll `recovering`, exit 1, forever."""
    config = tmp_path / "agent.toml"
    config.write_text("rise = 3\n" + SHIPPED.read_text())
    (name,) = [address.name for address in raw_from_toml(str(config))["nodes"]]
    env = {
        "GALERA_HEALTH_NODES": f"{name}={synced_cluster.node('n2').address()}",
        "GALERA_HEALTH_USER": synced_cluster.monitor_user,
        "GALERA_HEALTH_PASSWORD_FILE": synced_cluster.password_file,
        "GALERA_HEALTH_STATE_DIR": str(tmp_path),
    }
    done = run_cli("check", "--config", str(config), env=env, timeout=60)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.startswith(f"{name}: synced"), done.stdout
