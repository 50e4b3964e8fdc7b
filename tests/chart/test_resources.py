"""The reference Galera pod is Guaranteed and InnoDB's buffer pool follows its memory.

A Burstable database pod is among the first evicted under node pressure and the first the kernel's
OOM killer picks; either way mariadbd dies without a clean shutdown (seqno -1) and the node often
comes back through an SST. Guaranteed needs requests == limits for cpu and memory in EVERY
container of the pod (the agent sidecar too), and a buffer pool sized below the limit.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from .helm import CHART, Helm, Rendered

REFERENCE = [CHART / "ci" / "reference-statefulset-values.yaml"]
CHUNK_MIB = 128


def qos_class(pod: dict[str, Any]) -> str:
    """Kubernetes' rule (pkg/apis/core/helper/qos): Guaranteed when every container sets cpu and
    memory limits and its requests (defaulting to the limits) equal them; BestEffort when none
    sets anything; Burstable otherwise."""
    containers = pod["containers"] + pod.get("initContainers", [])
    guaranteed, anything = True, False
    for container in containers:
        resources = container.get("resources", {})
        limits, requests = resources.get("limits", {}), resources.get("requests", {})
        anything = anything or bool(limits or requests)
        for kind in ("cpu", "memory"):
            if kind not in limits or str(requests.get(kind, limits[kind])) != str(limits[kind]):
                guaranteed = False
    return "Guaranteed" if guaranteed else ("Burstable" if anything else "BestEffort")


def mib(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def buffer_pool_mib(rendered: Rendered) -> int:
    cnf = rendered.one("ConfigMap", "db-galera-health-galera")["data"]["galera.cnf"]
    (value,) = re.findall(r"^innodb_buffer_pool_size = (\d+)M$", cnf, re.MULTILINE)
    return int(value)


def database(rendered: Rendered) -> dict[str, Any]:
    pod = rendered.one("StatefulSet")["spec"]["template"]["spec"]
    (db,) = [c for c in pod["containers"] if c["name"] == "mariadb"]
    return db


def test_the_reference_pod_is_guaranteed(helm: Helm) -> None:
    rendered = helm.render(REFERENCE)
    pod = rendered.one("StatefulSet")["spec"]["template"]["spec"]
    assert qos_class(pod) == "Guaranteed"
    db = database(rendered)
    assert db["resources"]["requests"] == db["resources"]["limits"]
    # the check can fail: the 0.1.0 shape (1Gi request, 2Gi limit, no cpu limit) is Burstable
    old = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    assert qos_class({"containers": [{"resources": old}]}) == "Burstable"


@pytest.mark.parametrize(
    ("memory", "percent"), [("2Gi", None), ("8Gi", 60), ("1536Mi", 50), ("512Mi", 10)]
)
def test_buffer_pool_follows_the_memory_limit(helm: Helm, memory: str, percent: int | None) -> None:
    sets = [f"referenceStatefulSet.resources.memory={memory}"]
    if percent is not None:
        sets.append(f"referenceStatefulSet.innodbBufferPoolPercent={percent}")
    rendered = helm.render(REFERENCE, sets)
    limit = mib(database(rendered)["resources"]["limits"]["memory"])
    assert limit == mib(memory)
    share = percent or 50
    expected = max(CHUNK_MIB, limit * share // 100 // CHUNK_MIB * CHUNK_MIB)
    assert buffer_pool_mib(rendered) == expected
    assert buffer_pool_mib(rendered) <= limit * share / 100 or expected == CHUNK_MIB
    assert buffer_pool_mib(rendered) % CHUNK_MIB == 0


def test_the_default_leaves_half_the_memory_outside_the_buffer_pool(helm: Helm) -> None:
    rendered = helm.render(REFERENCE)
    limit = mib(database(rendered)["resources"]["limits"]["memory"])
    assert buffer_pool_mib(rendered) == limit // 2 == 1024


def test_a_burstable_agent_is_refused(helm: Helm) -> None:
    error = helm.failure(REFERENCE, ["agent.resources.requests.cpu=20m"])
    assert "agent.resources: requests must equal limits" in error
    error = helm.failure(REFERENCE, ["referenceStatefulSet.resources.memory=2G"])
    assert "at '/referenceStatefulSet/resources/memory'" in error
    error = helm.failure(REFERENCE, ["referenceStatefulSet.resources.requests.memory=1Gi"])
    assert "additional properties 'requests' not allowed" in error


def test_the_choice_is_explained(helm: Helm) -> None:
    doc = (CHART.parents[1] / "docs" / "kubernetes.md").read_text()
    section = doc.split("## Resources of the reference database", 1)[1].split("\n## ", 1)[0]
    rendered = helm.render(REFERENCE)
    limits = database(rendered)["resources"]["limits"]
    assert "Guaranteed" in section and "innodbBufferPoolPercent" in section
    assert f"`{limits['memory']}`" in section and f"{buffer_pool_mib(rendered)}M" in section
