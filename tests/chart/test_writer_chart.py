"""The writer election in the chart: the agent's writer setting, a writer LoadBalancer Service
whose Azure probe asks /writer beside the read Service, and the lease grant in the reference
StatefulSet's init SQL."""

from __future__ import annotations

import re
from pathlib import Path

from galera_health.config import raw_from_toml

from .helm import CHART, RELEASE, Helm

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
    assert writer["spec"]["selector"] == read["spec"]["selector"]
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


def test_reference_statefulset_grants_the_lease_schema_at_first_init(helm: Helm) -> None:
    rendered = helm.render(WRITER)
    sql = rendered.one("ConfigMap", f"{NAME}-galera")["data"]["galera-health-grants.sql"]
    assert re.fullmatch(
        r"GRANT CREATE, ALTER, SELECT, INSERT, UPDATE ON galera_health\.\* TO 'health'@'%';\s*", sql
    ), sql
    pod = rendered.one("StatefulSet")["spec"]["template"]["spec"]
    mounts = {
        m["mountPath"]: m.get("subPath") for c in pod["containers"] for m in c["volumeMounts"]
    }
    assert mounts["/docker-entrypoint-initdb.d/galera-health-grants.sql"] == (
        "galera-health-grants.sql"
    )


def test_writer_service_without_the_election_is_one_line(helm: Helm) -> None:
    error = helm.failure(DEFAULTS, ["writerService.enabled=true"])
    assert "writerService.enabled needs agent.writer=true" in error
    error = helm.failure(
        DEFAULTS, ["writerService.enabled=true", "agent.writer=true", "service.type=ClusterIP"]
    )
    assert "writerService.enabled needs service.enabled, service.type=LoadBalancer" in error
