"""The role on the pod (kubernetes_pod_label) against a real kube-apiserver and its EndpointSlice
controller, with the real 3-node test bed and one agent per node, each labelling its own pod.

The pods stand in for the Galera pods (created with nodeName, Ready through the status
subresource, no kubelet); the writer Service selects the Galera labels plus `<key>=writer`, as
the chart's does, and the EndpointSlice controller fills its slice. What a client inside the
cluster reaches is that slice, so it is what is asserted: exactly the lease holder's pod in
steady state; the new holder's within the agent's bound + 2 s after a fault of the writer;
never two pods for more than 1 s; the agents answer /health and /writer from the lease with
the API server stopped, and the labels catch up when it returns.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import urllib3

from galera_health.testbed import GaleraTestbed
from testkit.agent import AgentProcess
from testkit.kube import STRANGER, KubeError, KubeTestbed

from .conftest import restore
from .election import (
    FAULT_BOUND,
    MAINTENANCE_BOUND,
    NAMES,
    OVERLAP_BOUND,
    Election,
    Moved,
    event,
    get_status,
)

pytestmark = pytest.mark.galera

KEY = "galera-health/role"
GALERA = {"app.kubernetes.io/name": "mariadb-galera"}
WRITER_SERVICE = "galera-writer"
READERS_SERVICE = "galera-readers"
SLICE_SLACK = 2.0  # the bound: the slice follows the writer within its bound + 2 s
SAMPLE_EVERY = 0.1


def pod(node: str) -> str:
    return f"galera-{node}"


@dataclass
class SliceSample:
    at: float
    pods: frozenset[str]


@dataclass
class SliceSampler:
    """Reads the writer Service's EndpointSlice every 100 ms, in a thread (a failed read,
    e.g. with the API server stopped, is no sample)."""

    kube: KubeTestbed
    samples: list[SliceSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="slice-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                pods = self.kube.endpoint_pods(WRITER_SERVICE, timeout=1.0)
                self.samples.append(SliceSample(started, frozenset(pods)))
            except (KubeError, urllib3.exceptions.HTTPError):  # the API server may be down
                pass
            self._stop.wait(max(0.0, SAMPLE_EVERY - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def since(self, start: float) -> list[SliceSample]:
        return [s for s in list(self.samples) if s.at >= start]

    def wait(self, predicate: Callable[[SliceSample], bool], start: float, timeout: float) -> float:
        """When a sample since `start` first matched (monotonic)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sample in self.since(start):
                if predicate(sample):
                    return sample.at
            time.sleep(0.05)
        raise AssertionError(f"no matching EndpointSlice within {timeout} s: {self.samples[-5:]}")


def two_pods_seconds(samples: list[SliceSample]) -> float:
    return sum(
        following.at - sample.at
        for sample, following in itertools.pairwise(samples)
        if len(sample.pods) >= 2
    )


@dataclass
class Labelled:
    election: Election
    slices: SliceSampler
    kube: KubeTestbed


@pytest.fixture(scope="module")
def labelled(
    cluster: GaleraTestbed, writer_account: tuple[str, str], kube: KubeTestbed
) -> Iterator[Labelled]:
    restore(cluster)
    kube.create_node()
    for index, name in enumerate(NAMES, 1):
        kube.create_ready_pod(pod(name), GALERA, f"10.1.0.{index}")
    kube.create_service(WRITER_SERVICE, {**GALERA, KEY: "writer"})
    kube.create_service(READERS_SERVICE, {**GALERA, KEY: "standby"})

    def options(name: str) -> tuple[tuple[str, ...], dict[str, str]]:
        flags = (
            "--kubernetes-pod-label", KEY,
            "--kubernetes-api-url", kube.url,
            "--kubernetes-token-file", kube.token_file(name),
            "--kubernetes-ca-file", kube.ca_file,
        )  # fmt: skip
        return flags, {"POD_NAME": pod(name), "POD_NAMESPACE": kube.namespace}

    election = Election(cluster, *writer_account, options)
    slices = SliceSampler(kube)
    election.sampler.start()
    slices.start()
    try:
        yield Labelled(election, slices, kube)
    finally:
        slices.stop()
        election.stop()
        restore(cluster)


def steady_writer(labelled: Labelled) -> str:
    """The one writer, once the slice holds exactly its pod."""
    writer = labelled.election.sampler.current_writer(timeout=40)
    labelled.slices.wait(lambda s: s.pods == {pod(writer)}, time.monotonic() - 1, 20)
    return writer


def test_the_slice_holds_exactly_the_lease_holder(labelled: Labelled) -> None:
    writer = steady_writer(labelled)
    start = time.monotonic()
    time.sleep(3.0)
    samples = labelled.slices.since(start)
    assert len(samples) >= 10, samples
    assert all(s.pods == {pod(writer)} for s in samples), samples
    assert labelled.kube.endpoint_pods(READERS_SERVICE) == {pod(n) for n in NAMES if n != writer}
    for name in NAMES:
        wanted = "writer" if name == writer else "standby"
        assert labelled.kube.pod_labels(pod(name)) == {**GALERA, KEY: wanted}
        agent = labelled.election.agents[name]
        document = agent.status()["nodes"][name]["writer"]["pod_label"]
        assert document["in_step"] is True and document["value"] == wanted, document
        assert document["pod"] == pod(name) and document["error"] is None, document
        metrics = get_status(agent.port, "/metrics")[1]
        assert f'galera_health_pod_label_in_step{{node="{name}"}} 1.0' in metrics
        # /reader: the read rule's probe keeps reads off the writer (the readers Service's pods)
        status, body = get_status(agent.port, "/reader")
        if name == writer:
            assert status == 503 and body.endswith("; reads go to the other nodes\n"), body
        else:
            assert (status, body) == (200, f"{name}: reader; standby (writer: {writer})\n")


def follows(labelled: Labelled, moved: Moved, what: str) -> None:
    """After event(): the slice held the new writer's pod within the bound + 2 s, never two
    pods for more than a second, and holds the current writer's now."""
    sampler, slices = labelled.election.sampler, labelled.slices
    role_moved = next(
        s.at for s in sampler.since(moved.start) if s.writers == (moved.new,)
    )  # /writer 200 on the new holder
    followed = slices.wait(lambda s: s.pods == {pod(moved.new)}, moved.start, 5)
    samples = slices.since(moved.start - 0.5)
    overlap = two_pods_seconds(samples)
    print(
        f"\npod label, {what}: slice = {{{pod(moved.new)}}} {followed - moved.start:.2f} s after "
        f"the fault, {followed - role_moved:+.2f} s after the new writer's first 200; "
        f"two pods {overlap:.2f} s"
    )
    assert followed - moved.start <= moved.bound + SLICE_SLACK, (followed - moved.start, moved)
    assert overlap <= OVERLAP_BOUND, f"{what}: the slice held two pods for {overlap:.2f} s"
    # the repaired node's rejoin may move the role on (its donor gives it up): the slice
    # follows wherever the lease is now
    current = sampler.current_writer()
    slices.wait(lambda s: s.pods == {pod(current)}, time.monotonic() - 0.5, 5)


def test_maintenance_of_the_writer(labelled: Labelled) -> None:
    election = labelled.election

    def inject(name: str) -> None:
        (election.state_dir(name) / "maintenance").write_text("")

    def repair(name: str) -> None:
        (election.state_dir(name) / "maintenance").unlink()

    steady_writer(labelled)
    follows(labelled, event(election, "maintenance", inject, repair, MAINTENANCE_BOUND), "maint")


def test_writer_frozen(labelled: Labelled) -> None:
    cluster = labelled.election.cluster
    steady_writer(labelled)
    moved = event(
        labelled.election,
        "frozen (SIGSTOP)",
        lambda name: cluster.node(name).freeze(),
        lambda name: cluster.node(name).thaw(),
        FAULT_BOUND,
        evicts=True,
    )
    follows(labelled, moved, "freeze")


def test_writer_killed(labelled: Labelled) -> None:
    cluster = labelled.election.cluster
    steady_writer(labelled)
    moved = event(
        labelled.election,
        "kill -9 of mariadbd",
        lambda name: cluster.node(name).kill(),
        lambda name: cluster.node(name).start(),
        FAULT_BOUND,
        evicts=True,
    )
    follows(labelled, moved, "kill -9")


def test_writer_agent_killed_leaves_a_label_the_new_holder_takes_off(labelled: Labelled) -> None:
    election = labelled.election

    def inject(name: str) -> None:
        os.kill(election.agents[name].pid, signal.SIGKILL)

    def repair(name: str) -> None:
        election.restart_agent(name)

    steady_writer(labelled)
    moved = event(election, "agent killed", inject, repair, FAULT_BOUND)
    follows(labelled, moved, "agent kill -9")
    document = election.agents[moved.new].status()["nodes"][moved.new]["writer"]["pod_label"]
    assert document["cleared"] >= 1, document


def test_api_server_down_changes_nothing_the_lease_decides(labelled: Labelled) -> None:
    """With the API server stopped: /health and /writer answer from the lease as before, a
    maintenance still moves the role within its bound, the old writer's /status says its pod
    is out of step; once the API server is back the slice holds the new writer's pod."""
    election, kube = labelled.election, labelled.kube
    old = steady_writer(labelled)
    kube.stop_apiserver()
    try:
        time.sleep(1.5)
        for name in NAMES:
            assert election.health(name) == 200, name
        assert election.sampler.current_writer(timeout=10) == old
        marker = election.state_dir(old) / "maintenance"
        start = time.monotonic()
        marker.write_text("")
        new = election.sampler.wait(
            lambda s: len(s.writers) == 1 and s.writers[0] != old, start, 30
        )
        took = new.at - start
        assert took <= MAINTENANCE_BOUND, took
        election.agents[old].wait_for(
            lambda a: a.status == 200 and '"in_step":false' in a.body.replace(" ", ""),
            "/status",
            timeout=10,
        )
        document = election.agents[old].status()["nodes"][old]["writer"]["pod_label"]
        assert document["wanted"] == "standby" and document["value"] is None, document
        assert "API server" in document["error"] and document["api_errors"] >= 1, document
        metrics = get_status(election.agents[old].port, "/metrics")[1]
        assert f'galera_health_pod_label_in_step{{node="{old}"}} 0.0' in metrics
        assert "Traceback" not in election.agents[old].output()
    finally:
        restarted = time.monotonic()
        kube.start_apiserver()
    followed = labelled.slices.wait(
        lambda s: s.pods == {pod(new.writers[0])}, restarted, 60
    )
    print(
        f"\npod label, API server down: new writer after {took:.2f} s; the slice held it "
        f"{followed - restarted:.2f} s after the API server was started again"
    )
    marker.unlink()
    election.wait_healthy(old)
    assert election.sampler.current_writer() == new.writers[0]


def test_a_service_account_without_the_role_is_one_line(
    labelled: Labelled, cluster: GaleraTestbed
) -> None:
    """An agent whose token the API server knows but no Role binds: /status and the log say
    what to grant, once; /health is unaffected (the monitor account: never a writer here)."""
    kube = labelled.kube
    kube.create_ready_pod("galera-stranger", GALERA, "10.1.0.9")
    flags = [
        "--writer",
        "--kubernetes-pod-label", KEY,
        "--kubernetes-api-url", kube.url,
        "--kubernetes-token-file", kube.token_file(STRANGER),
        "--kubernetes-ca-file", kube.ca_file,
    ]  # fmt: skip
    env = {"POD_NAME": "galera-stranger", "POD_NAMESPACE": kube.namespace}
    node = cluster.node("n2")
    with AgentProcess(
        [f"n2={node.address()}"], cluster.monitor_user, cluster.password_file, flags, env
    ) as agent:
        agent.wait_for(lambda a: a.status == 200, "/health", timeout=30)
        agent.wait_for(lambda a: "may not PATCH pods" in a.body, "/status", timeout=15)
        document = agent.status()["nodes"]["n2"]["writer"]["pod_label"]
        assert document["in_step"] is False and document["wanted"] == "standby", document
        assert document["error"] == (
            f"the pod's service account may not PATCH pods in {kube.namespace}; bind it to a "
            "Role with get, list and patch on pods (the chart renders one)"
        ), document
        time.sleep(2.5)  # several retries: still one log line
        assert agent.get("/health").status == 200
        assert get_status(agent.port, "/writer")[0] == 503
    lines = [line for line in agent.output().splitlines() if "may not PATCH pods" in line]
    assert len(lines) == 1, agent.output()
    assert "Traceback" not in agent.output()
    assert kube.agent_tokens[STRANGER] not in agent.output()  # never a secret in a log line
    assert kube.pod_labels("galera-stranger") == GALERA  # nothing was written
