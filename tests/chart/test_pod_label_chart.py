"""The role on the pod in the chart (agent.podLabel, on with agent.writer): the agent's
kubernetes_pod_label, the downward-API environment it reads, a ServiceAccount whose Role may
only get, list and patch pods, the writer Service selecting `<key>=writer` and a readers Service
selecting `<key>=standby`. The same Role runs against a real API server in
tests/integration/test_pod_label.py."""

from __future__ import annotations

from pathlib import Path

from galera_health.config import build_settings, raw_from_toml
from testkit.kube import ROLE_RULES

from .helm import CHART, RELEASE, Helm

NAME = f"{RELEASE}-galera-health"
WRITER = [CHART / "ci" / "writer-values.yaml"]
DEFAULTS = [CHART / "ci" / "default-values.yaml"]
KEY = "galera-health/role"


def test_the_agents_label_their_pods_with_a_role_that_may_only_touch_pods(helm: Helm) -> None:
    rendered = helm.render(WRITER)
    account = rendered.one("ServiceAccount", f"{NAME}-agent")
    role = rendered.one("Role", f"{NAME}-agent")
    binding = rendered.one("RoleBinding", f"{NAME}-agent")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]}
    ]
    assert role["rules"] == ROLE_RULES  # the Role the agents hold against the real API server
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "galera"}
    ]
    pod = rendered.one("StatefulSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    agent = next(c for c in pod["containers"] if c["name"] == "galera-health")
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in agent["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert rendered.agent_config()["kubernetes_pod_label"] == KEY


def test_writer_and_readers_services_select_the_label(helm: Helm) -> None:
    rendered = helm.render(WRITER)
    galera = rendered.one("Service", NAME)["spec"]["selector"]
    writer = rendered.one("Service", f"{NAME}-writer")["spec"]["selector"]
    readers = rendered.one("Service", f"{NAME}-readers")
    assert writer == {**galera, KEY: "writer"}
    assert readers["spec"]["selector"] == {**galera, KEY: "standby"}
    assert readers["spec"]["type"] == "ClusterIP"


def test_agent_config_with_the_pod_label_is_one_the_agent_loads(helm: Helm, tmp_path: Path) -> None:
    rendered = helm.render(WRITER, ["agent.podLabel=example.com/galera-role"])
    path = tmp_path / "agent.toml"
    path.write_text(rendered.agent_toml())
    raw = raw_from_toml(str(path))
    assert raw["kubernetes_pod_label"] == "example.com/galera-role"
    # the whole config passes the agent's own checks (writer on, one node, a valid key); the
    # secret and state mounts are not here
    raw.pop("state_dir")
    raw["password_file"] = raw["writer_password_file"] = str(tmp_path)
    settings = build_settings([raw], need_listen=False)
    assert settings.kubernetes_pod_label == "example.com/galera-role" and settings.writer


def test_off_without_the_writer_or_with_an_empty_key(helm: Helm) -> None:
    no_key = ["agent.podLabel=", "readersService.enabled=false"]
    for rendered in (helm.render(DEFAULTS), helm.render(WRITER, no_key)):
        assert "kubernetes_pod_label" not in rendered.agent_config()
        assert not rendered.all("Role") and not rendered.all("ServiceAccount")
        pod = rendered.all("StatefulSet")
        assert all("serviceAccountName" not in s["spec"]["template"]["spec"] for s in pod)
    rendered = helm.render(WRITER, no_key)
    writer = rendered.one("Service", f"{NAME}-writer")["spec"]["selector"]
    assert KEY not in writer


def test_readers_service_without_the_label_is_one_line(helm: Helm) -> None:
    error = helm.failure(DEFAULTS, ["readersService.enabled=true"])
    assert "readersService.enabled needs agent.writer=true and agent.podLabel" in error
    error = helm.failure(WRITER, ["agent.podLabel=Bad Key!"])
    assert "podLabel" in error

