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


@pytest.fixture
def synced_cluster(cluster: GaleraTestbed) -> Iterator[GaleraTestbed]:
    """The cluster, all Synced before and after the test (a test restores what it broke)."""
    restore(cluster)
    yield cluster
    restore(cluster)


def restore(cluster: GaleraTestbed) -> None:
    for node in cluster.nodes:
        restore_node(node)
    for node in cluster.nodes:
        node.wait_synced(timeout=180)
    # A thawed node looks Synced for a few seconds before it notices its eviction: whole means
    # every node sees every other.
    deadline = time.monotonic() + 180
    size = str(len(cluster.nodes))
    while any(node.status("wsrep_cluster_size") != size for node in cluster.nodes):
        assert time.monotonic() < deadline, "the test cluster did not become whole again"
        time.sleep(0.25)
    for node in cluster.nodes:
        node.wait_synced(timeout=180)


def restore_node(node: TestbedNode) -> None:
    if node.frozen:
        node.thaw()
    if not node.is_running():
        node.start()
    node.isolate(False)
    for statement in (
        "SET GLOBAL wsrep_desync = OFF",
        "SET GLOBAL read_only = OFF",
        "SET GLOBAL wsrep_reject_queries = NONE",
    ):
        node.sql(statement)
