"""docs/kubernetes.md and docs/azure-load-balancer.md against the chart they describe.

The YAML snippets parse and the Bitnami sidecar snippet is a valid Kubernetes container; the
Azure LB budgets, under both readings of the probe threshold, are test_azure_probe.py's.
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import yaml

from .helm import CHART, REPO

KUBERNETES_DOC = REPO / "docs" / "kubernetes.md"
AZURE_DOC = REPO / "docs" / "azure-load-balancer.md"
ENDPOINT_PROPAGATION = 2  # kubelet -> API server -> EndpointSlice -> kube-proxy, budgeted
MAINTENANCE_PICKUP = 0.5  # the agent sees a maintenance file within about 0.5 s


def defaults() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)


def test_prestop_sleep_covers_every_lb_window() -> None:
    values = defaults()
    sleep = values["drain"]["preStopSleepSeconds"]
    azure = values["service"]["azureProbe"]
    readiness = values["probes"]["readiness"]
    azure_window = azure["intervalSeconds"] * azure["numberOfProbes"]
    assert sleep >= MAINTENANCE_PICKUP + azure_window
    assert sleep >= readiness["periodSeconds"] + ENDPOINT_PROPAGATION + azure_window
    assert values["agent"]["drainSeconds"] >= sleep
    assert f"sleep {sleep}" in KUBERNETES_DOC.read_text()


def test_kubernetes_doc_snippets_parse_and_the_bitnami_sidecar_is_valid() -> None:
    blocks = yaml_blocks(KUBERNETES_DOC.read_text())
    parsed = [yaml.safe_load(b) for b in blocks if "{{" not in b]
    assert len(parsed) >= 4
    bitnami = next(p for p in parsed if isinstance(p, dict) and "sidecars" in p)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bitnami-snippet"},
        "spec": {
            "containers": [
                {
                    "name": "mariadb-galera",
                    "image": "bitnami/mariadb-galera",
                    "readinessProbe": bitnami["customReadinessProbe"],
                    "startupProbe": bitnami["customStartupProbe"],
                    "lifecycle": bitnami["lifecycleHooks"],
                    "volumeMounts": bitnami["extraVolumeMounts"],
                },
                *bitnami["sidecars"],
            ],
            "volumes": bitnami["extraVolumes"],
        },
    }
    kubernetes_validate.validate(pod, "1.37.0", strict=True)
    assert bitnami["livenessProbe"] == {"enabled": False}
    assert bitnami["podManagementPolicy"] == "Parallel"
    assert bitnami["pdb"]["maxUnavailable"] == 1


def test_azure_doc_probe_settings_match_the_chart() -> None:
    azure = defaults()["service"]["azureProbe"]
    text = AZURE_DOC.read_text()
    assert (
        f"--interval {azure['intervalSeconds']} --probe-threshold {azure['numberOfProbes']}" in text
    )
    assert f"intervalInSeconds: {azure['intervalSeconds']}" in text
    assert f"probeThreshold: {azure['numberOfProbes']}" in text
    assert "requestPath: '/health'" in text and "port: 9200" in text
    assert "168.63.129.16" in text and "AzureLoadBalancer" in text
