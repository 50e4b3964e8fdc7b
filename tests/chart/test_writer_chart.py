"""The writer election in the chart: the agent's writer setting, a writer LoadBalancer Service
whose Azure probe asks /writer beside the read Service, and the accounts (a USAGE-only monitor,
a writer account with the lease's grants) in the reference StatefulSet's init script."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from galera_health.config import raw_from_toml

from .helm import CHART, RELEASE, Helm, Rendered

NAME = f"{RELEASE}-galera-health"
WRITER = [CHART / "ci" / "writer-values.yaml"]
DEFAULTS = [CHART / "ci" / "default-values.yaml"]
ANNOTATION = "service.beta.kubernetes.io/port_{port}_health-probe_{what}"


def test_writer_service_probes_writer_on_the_read_services_probe_port(helm: Helm) -> None:
    rendered = helm.render(WRITER)
    read = rendered.one("Service", NAME)
    writer = rendered.one("Service", f"{NAME}-writer")
    probe = rendered.one("Service", f"{NAME}-probe")
    node_port = str(probe["spec"]["ports"][0]["nodePort"])
    annotations = writer["metadata"]["annotations"]
    assert annotations[ANNOTATION.format(port=3306, what="request-path")] == "/writer"
    assert annotations[ANNOTATION.format(port=3306, what="port")] == node_port
    assert annotations[ANNOTATION.format(port=3306, what="protocol")] == "Http"
    assert annotations["service.beta.kubernetes.io/azure-load-balancer-ipv4"] == "10.0.0.42"
    assert read["metadata"]["annotations"][ANNOTATION.format(port=3306, what="request-path")] == (
        "/health"
    )
    assert read["metadata"]["annotations"][ANNOTATION.format(port=3306, what="port")] == node_port
    assert writer["spec"]["type"] == "LoadBalancer"
    assert writer["spec"]["externalTrafficPolicy"] == "Local"
    # the Galera pods, and of them only the one whose agent labelled it writer (agent.podLabel)
    role = {"galera-health/role": "writer"}
    assert writer["spec"]["selector"] == {**read["spec"]["selector"], **role}
    assert rendered.agent_config()["writer"] is True


def test_agent_config_with_writer_is_one_the_agent_loads(helm: Helm, tmp_path: Path) -> None:
    rendered = helm.render(WRITER, ["agent.writerPriority=2"])
    path = tmp_path / "agent.toml"
    path.write_text(rendered.agent_toml())
    raw = raw_from_toml(str(path))
    assert (raw["writer"], raw["writer_priority"]) == (True, 2)
    defaults = helm.render(DEFAULTS)
    assert defaults.agent_config()["writer"] is False
    assert all(not s["metadata"]["name"].endswith("-writer") for s in defaults.all("Service"))


def accounts_script(rendered: Rendered) -> str:
    text: str = rendered.one("ConfigMap", f"{NAME}-galera")["data"]["galera-health-accounts.sh"]
    return text


def test_reference_statefulset_creates_both_accounts_at_first_init(helm: Helm) -> None:
    """The init script as the image sources it (bash, docker_process_sql reading SQL on stdin):
    the monitor USAGE-only and the writer account with the lease's grants, each only on the
    loopback; the passwords from the Secret's environment, quoted. Run against a real node in
    tests/integration/test_writer_ops.py."""
    rendered = helm.render(WRITER)
    env = {
        "PATH": os.environ["PATH"],
        "GALERA_HEALTH_MONITOR_PASSWORD": "mon'pw",
        "GALERA_HEALTH_WRITER_ACCOUNT_PASSWORD": "wr\\pw",
    }
    run = subprocess.run(
        ["bash", "-c", 'docker_process_sql() { cat; }; source "$0"', "/dev/stdin"],
        input=accounts_script(rendered), capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    statements = run.stdout.splitlines()
    assert statements == [
        line
        for host in ("localhost", "127.0.0.1")
        for line in (
            f"CREATE USER IF NOT EXISTS 'health'@'{host}' IDENTIFIED BY 'mon''pw';",
            f"CREATE USER IF NOT EXISTS 'health_writer'@'{host}' IDENTIFIED BY 'wr\\\\pw';",
            "GRANT CREATE, ALTER, SELECT, INSERT, UPDATE ON galera_health.* TO "
            f"'health_writer'@'{host}';",
            f"GRANT SELECT ON mysql.wsrep_cluster_members TO 'health_writer'@'{host}';",
        )
    ], statements
    assert "ci-writer-password" not in accounts_script(rendered)
    pod = rendered.one("StatefulSet")["spec"]["template"]["spec"]
    mounts = {
        m["mountPath"]: m.get("subPath") for c in pod["containers"] for m in c["volumeMounts"]
    }
    assert mounts["/docker-entrypoint-initdb.d/galera-health-accounts.sh"] == (
        "galera-health-accounts.sh"
    )
    names = {e["name"] for c in pod["containers"] for e in c.get("env", [])}
    assert "MARIADB_USER" not in names  # the image would create it as '%'
    config = rendered.agent_config()
    assert (config["writer_user"], config["writer_password_file"]) == (
        "health_writer",
        "/etc/galera-health/secret/writer-password",
    )
    secret = rendered.one("Secret")["data"]
    assert "writer-password" in secret


def test_writer_without_a_writer_password_is_one_line(helm: Helm) -> None:
    error = helm.failure(DEFAULTS, ["agent.writer=true"])
    assert "auth.writerPassword is required with agent.writer" in error


def test_writer_service_without_the_election_is_one_line(helm: Helm) -> None:
    error = helm.failure(DEFAULTS, ["writerService.enabled=true"])
    assert "writerService.enabled needs agent.writer=true" in error
    error = helm.failure(
        DEFAULTS,
        [
            "writerService.enabled=true",
            "agent.writer=true",
            "auth.writerPassword=x",
            "service.type=ClusterIP",
        ],
    )
    assert "writerService.enabled needs service.enabled, service.type=LoadBalancer" in error


def test_writer_users_reach_the_agent_and_the_writer_account_gets_what_the_kill_needs(
    helm: Helm,
) -> None:
    """agent.writerUsers: the agent's writer_users, PROCESS and CONNECTION ADMIN for the writer
    account only (the monitor stays USAGE-only), and start.sh applies the accounts at every
    start (run against a real node in tests/integration/test_writer_sessions.py)."""
    rendered = helm.render(WRITER, ["agent.writerUsers={app,reports}"])
    assert rendered.agent_config()["writer_users"] == "app,reports"
    script = accounts_script(rendered)
    assert "GRANT PROCESS, CONNECTION ADMIN ON *.* TO 'health_writer'@'$host';" in script
    assert "PROCESS" not in accounts_script(helm.render(WRITER))
    assert "writer_users" not in helm.render(WRITER).agent_config()
    data = rendered.one("ConfigMap", f"{NAME}-galera")["data"]
    assert 'bash "$apply_accounts" &' in data["start.sh"]
    pod = rendered.one("StatefulSet")["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
    assert "/galera/apply-accounts.sh" in mounts
    error = helm.failure(DEFAULTS, ["agent.writerUsers={app}"])
    assert "agent.writerUsers needs agent.writer=true" in error
    # the grace: the agent's default unless set (one place for the default: config.py)
    assert "writer_kill_grace" not in rendered.agent_config()
    tuned = helm.render(WRITER, ["agent.writerUsers={app}", "agent.writerKillGrace=11"])
    assert tuned.agent_config()["writer_kill_grace"] == 11.0
    assert "writerKillGrace" in helm.failure(WRITER, ["agent.writerKillGrace=-1"])
