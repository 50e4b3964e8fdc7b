"""An upgrade keeps the Azure probe's nodePort of the Service the release already has.

The chart asks the cluster (helm `lookup`) for its probe Service and keeps that Service's nodePort
unless service.azureProbe.nodePort is set: a release installed by 0.1.0 (fixed 30920) keeps 30920,
where a plain upgrade used to move it to the derived number and every backend probed down until
cloud-provider-azure reconfigured the LB. Offline (`helm template`, client-side dry runs) lookup
finds nothing, so the rendering shows the derived number; the choice itself is a named template
that takes the existing Service, rendered here with the objects the API server would return.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .helm import CHART, NAMESPACE, RELEASE, Helm

NAME = f"{RELEASE}-galera-health"
DEFAULTS = [CHART / "ci" / "default-values.yaml"]
# The probe Service as `kubectl get svc -o json` shows it (trimmed): what lookup returns.
EXISTING = (
    '(dict "apiVersion" "v1" "kind" "Service" "metadata" (dict "name" "{name}-probe") '
    '"spec" (dict "type" "NodePort" "ports" (list (dict "name" "{port_name}" "port" 9200 '
    '"targetPort" 9200 "nodePort" {node_port} "protocol" "TCP"))))'
)
UNREACHABLE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""
CASES = {
    "none": "(dict)",
    "from_0_1_0": EXISTING.format(name=NAME, port_name="galera-health", node_port=30920),
    # numbers decoded from the API's JSON may arrive as floats
    "float": EXISTING.format(name=NAME, port_name="galera-health", node_port="30921.0"),
    "other_port": EXISTING.format(name=NAME, port_name="metrics", node_port=31000),
}


def rendered_choices(helm: Helm, tmp_path: Path, *sets: str) -> dict[str, int]:
    chart = tmp_path / "galera-health"
    shutil.copytree(CHART, chart)
    lines = [
        f'  {case}: {{{{ include "galera-health.probeNodePortFrom" '
        f'(dict "root" . "existing" {existing}) | quote }}}}'
        for case, existing in CASES.items()
    ]
    (chart / "templates" / "zz-probe-port.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe-port\ndata:\n"
        + "\n".join(lines)
        + "\n"
    )
    data = helm.render(DEFAULTS, list(sets), chart=chart).one("ConfigMap", "probe-port")["data"]
    return {case: int(value) for case, value in data.items()}


def offline_node_port(helm: Helm, *sets: str) -> int:
    rendered = helm.render(DEFAULTS, list(sets))
    (port,) = rendered.one("Service", f"{NAME}-probe")["spec"]["ports"]
    annotations = rendered.one("Service", NAME)["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/port_3306_health-probe_port"] == str(
        port["nodePort"]
    )
    return int(port["nodePort"])


def test_an_existing_probe_services_node_port_is_kept(helm: Helm, tmp_path: Path) -> None:
    choices = rendered_choices(helm, tmp_path)
    derived = offline_node_port(helm)
    assert 30000 <= derived <= 30085
    assert choices["none"] == derived  # a first install: the derived number
    assert choices["from_0_1_0"] == 30920  # an upgrade: the port the LB already probes
    assert choices["float"] == 30921
    assert choices["other_port"] == derived  # only the agent port's nodePort counts


def test_a_set_node_port_wins_over_the_existing_one(helm: Helm, tmp_path: Path) -> None:
    choices = rendered_choices(helm, tmp_path, "service.azureProbe.nodePort=31234")
    assert set(choices.values()) == {31234}
    assert offline_node_port(helm, "service.azureProbe.nodePort=31234") == 31234


def test_offline_rendering_finds_no_cluster_and_derives(helm: Helm, tmp_path: Path) -> None:
    """`helm template` asks no cluster: lookup returns nothing and the output is the derived
    port (what docs/kubernetes.md says), even with a kubeconfig at hand. The server-side dry run
    does ask, through exactly this lookup: with nothing listening at the API address it fails
    naming it (loopback port 1: refused at once)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(UNREACHABLE_KUBECONFIG)
    common = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    common += ["-f", str(DEFAULTS[0]), "--kubeconfig", str(kubeconfig)]
    offline = helm.run(*common)
    assert offline.returncode == 0, offline.stderr
    assert f"nodePort: {offline_node_port(helm)}" in offline.stdout
    server = helm.run(*common, "--dry-run=server")
    assert server.returncode != 0
    assert '"galera-health.probeNodePort" at <lookup "v1" "Service"' in server.stderr, server.stderr


def test_the_lookup_asks_for_the_rendered_probe_service() -> None:
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert 'lookup "v1" "Service" .Release.Namespace $name' in helpers
    assert '$name := printf "%s-probe" (include "galera-health.fullname" .)' in helpers
    service = (CHART / "templates" / "service.yaml").read_text()
    assert 'name: {{ include "galera-health.fullname" . }}-probe' in service
    assert "name: galera-health\n" in service  # the port name probeNodePortFrom looks for


@pytest.mark.parametrize("doc", ["kubernetes.md"])
def test_the_docs_say_what_helm_template_does(doc: str) -> None:
    text = (CHART.parents[1] / "docs" / doc).read_text()
    assert "helm lookup" in text or "`lookup`" in text
    assert "`helm template`" in text and "derived" in text and "30920" in text
