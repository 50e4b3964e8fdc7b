"""One real 3-node MariaDB Galera cluster for the whole run; each fault test restores its node."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from galera_health.testbed import (
    GaleraTestbed,
    TestbedError,
    TestbedNode,
    missing_requirements,
)
from testkit.kube import KubeTestbed, missing_kube


def started_testbed(attempts: int = 3, **options: object) -> GaleraTestbed:
    """A started test bed. A first SST between fresh nodes has failed here once in a while
    (rsync "No message of desired type"); a new bed on new ports is the cure, not a skip."""
    for attempt in range(1, attempts + 1):
        testbed = GaleraTestbed(**options)  # type: ignore[arg-type]
        try:
            testbed.start()
            return testbed
        except TestbedError as exc:
            testbed.stop()
            if attempt == attempts:
                raise
            print(f"test bed start failed (attempt {attempt}), retrying: {str(exc)[:300]}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def cluster() -> Iterator[GaleraTestbed]:
    problem = missing_requirements()
    if problem is not None:
        message = f"real Galera tests need MariaDB Galera: {problem}; run ./scripts/test"
        if os.environ.get("GALERA_TESTS_REQUIRE_GALERA") == "1" or os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    testbed = started_testbed(size=3)
    try:
        yield testbed
    finally:
        testbed.stop()


# The agents' writer_user: the lease's grants, beside the USAGE-only monitor account.
WRITER_USER = "gh_writer"
# Spelled here as the docs spell them, not imported: the tests check the agent asks for these.
WRITER_GRANTS = (
    "CREATE, ALTER, SELECT, INSERT, UPDATE ON galera_health.*",
    "SELECT ON mysql.wsrep_cluster_members",
)


@pytest.fixture(scope="session")
def writer_account(cluster: GaleraTestbed) -> tuple[str, str]:
    """The user and password file of an account with the lease's grants (the monitor's
    password): the agents' writer_user."""
    cluster.create_account(WRITER_USER, WRITER_GRANTS)
    return WRITER_USER, cluster.password_file


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeTestbed]:
    """A real Kubernetes control plane (etcd, kube-apiserver, the EndpointSlice controller) on
    loopback; fails (never skips) without its binaries when Galera tests are required."""
    problem = missing_kube()
    if problem is not None:
        message = f"the Kubernetes tests need a real API server: {problem}; run ./scripts/test"
        if os.environ.get("GALERA_TESTS_REQUIRE_GALERA") == "1" or os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    control_plane = KubeTestbed()
    try:
        control_plane.start()
        yield control_plane
    finally:
        control_plane.stop()


@pytest.fixture
def synced_cluster(cluster: GaleraTestbed) -> Iterator[GaleraTestbed]:
    """The cluster, all Synced before and after the test (a test restores what it broke)."""
    restore(cluster)
    yield cluster
    restore(cluster)


WHOLE = {
    "wsrep_local_state": "4",
    "wsrep_cluster_status": "Primary",
    "wsrep_ready": "ON",
}


def restore(cluster: GaleraTestbed, timeout: float = 180) -> None:
    """Undo every fault, then wait until every node is Synced, Primary and ready and counts
    every other in the same look (a thawed node looks Synced for a few seconds before it
    notices its eviction). One query per node and look: this runs twice per test."""
    for node in cluster.nodes:
        restore_node(node)
    wanted = {**WHOLE, "wsrep_cluster_size": str(len(cluster.nodes))}
    deadline = time.monotonic() + timeout
    while True:
        seen: dict[str, object] = {}
        for node in cluster.nodes:
            try:
                seen[node.name] = node.statuses(list(wanted), timeout=5)
            except TestbedError as exc:
                seen[node.name] = str(exc).splitlines()[0]
        if all(values == wanted for values in seen.values()):
            return
        if time.monotonic() > deadline:
            tails = "\n".join(node.log_tail(10) for node in cluster.nodes)
            raise AssertionError(f"the test cluster did not become whole again: {seen}\n{tails}")
        time.sleep(0.25)


def restore_node(node: TestbedNode) -> None:
    if node.frozen:
        node.thaw()
    if not node.is_running():
        node.start()
    node.isolate(False)
    node.sql(
        "SET GLOBAL wsrep_desync = OFF; SET GLOBAL read_only = OFF; "
        "SET GLOBAL wsrep_reject_queries = NONE"
    )
