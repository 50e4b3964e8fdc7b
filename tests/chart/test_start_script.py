"""The reference StatefulSet's start.sh, by running the rendered script against real agents.

Each pod has a real agent (`galera-health serve` with datadir and recovery_peers, as the chart
renders it, behind the status token); mysqld is down everywhere (a crash or a full stop), and
each test writes the pods' grastate.dat (or leaves a datadir empty). The script asks its agent's
/recovery (the shared rule of galera_health/recovery.py) and probes the peers' Galera ports, and
either hands mariadbd its arguments (join, or bootstrap with --wsrep-new-cluster) or keeps
waiting, saying why. The crash cases with real positions (mariadbd --wsrep-recover) and real
joins run on real Galera nodes in tests/integration/test_whole_cluster_recovery.py.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from galera_health.testbed import free_ports

from .helm import CHART, Helm
from .startscript import (
    STATEFULSET,
    Node,
    Outcome,
    PodAgents,
    mount_namespace_available,
    peer_address,
    render_start_script,
    run_start_script,
    start_script,
    stop_script,
    wait_output,
)

REFERENCE = [CHART / "ci" / "reference-statefulset-values.yaml"]
UUID = "4c2c9a3e-0b1e-11ef-8b7c-6f2d2d0b0b0b"
OTHER_UUID = "9d1e0c7a-0b1e-11ef-8b7c-6f2d2d0b0b0b"
PODS = [f"{STATEFULSET}-{i}" for i in range(3)]
SELF = PODS[0]
TOKEN = "start-script-token"


@pytest.fixture(scope="module")
def script(helm: Helm) -> str:
    if not mount_namespace_available():
        pytest.fail("start.sh tests need `unshare --mount` (root) for a private /etc/hosts")
    return render_start_script(helm, REFERENCE)


class Pods:
    def __init__(self, base: Path) -> None:
        self.nodes = {pod: Node(base / pod, hostname=pod) for pod in PODS}
        token = base / "token"
        token.write_text(TOKEN + "\n")
        closed = free_ports(len(PODS))
        # The peers' Galera port: bound here and not listening (connecting is refused), so no
        # other process on the machine can take it on 0.0.0.0 while these tests run.
        self.galera_port = free_ports(1)[0]
        self.galera: list[socket.socket] = [self.hold(i) for i in range(len(PODS))]
        self.agents = PodAgents(
            {pod: node.datadir for pod, node in self.nodes.items()},
            {pod: f"127.0.0.1:{port}" for pod, port in zip(PODS, closed, strict=True)},
            token,
        )

    def hold(self, ordinal: int) -> socket.socket:
        held = socket.socket()
        held.bind((peer_address(ordinal), self.galera_port))
        return held

    def galera_answers(self, ordinal: int) -> Iterator[None]:
        """A peer's Galera port accepts connections (its mariadbd runs), for the `with`."""
        self.galera[ordinal].listen(8)
        try:
            yield
        finally:
            self.galera[ordinal].close()
            self.galera[ordinal] = self.hold(ordinal)

    def reset(self) -> None:
        """Each test's start (its state() then sets the datadirs)."""
        for pod, node in self.nodes.items():
            node.force_bootstrap_pod = ""
            (node.rundir / "entrypoint-args").unlink(missing_ok=True)
            if pod not in self.agents.agents:
                self.agents.start(pod)

    def state(self, **positions: tuple[int, int] | tuple[int, int, str] | None) -> None:
        """pod ordinal "p0".. -> (seqno, safe_to_bootstrap[, uuid]) or None (empty; a pod not
        named too); then wait until every agent decided from exactly these datadirs.

        Each datadir goes straight from the previous test's state to this one (grastate.dat
        replaced whole, never wiped first): the agents read the datadirs and each other all the
        time, and a read between a wipe and the writes (empty) would be a state no test set,
        which a decision could still be made from after the wait saw the right one."""
        expected: dict[str, tuple[bool, str | None]] = {}
        for pod, node in self.nodes.items():
            value = positions.get(f"p{PODS.index(pod)}")
            keep = set() if value is None else {"mysql", "grastate.dat"}
            for entry in node.datadir.iterdir():
                if entry.name in keep:
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            if value is None:
                expected[pod] = (True, None)
                continue
            uuid = value[2] if len(value) == 3 else UUID  # type: ignore[misc]
            node.grastate(seqno=value[0], safe_to_bootstrap=value[1], uuid=uuid)
            expected[pod] = (False, f"{uuid}:{value[0]}" if value[0] >= 0 else None)
        self.wait_decided(expected)

    def wait_decided(self, expected: Mapping[str, tuple[bool, str | None] | None]) -> None:
        """Until every agent's decision has every pod named here answered with exactly this
        (empty, position); None: an empty datadir. Never vacuous: a pod missing from the
        reports, or not answered, or with any other datadir, keeps it waiting. Once it holds,
        no later decision differs: the files stay as they are until the next state()."""
        rows = {pod: (True, None) if e is None else e for pod, e in expected.items()}

        def seen(decision: dict[str, Any]) -> bool:
            found = {r["node"]: r for r in decision["reports"]}
            return all(
                pod in found
                and found[pod]["answered"]
                and (found[pod]["empty"], found[pod]["position"]) == row
                for pod, row in rows.items()
            )

        for pod in self.agents.agents:
            self.agents.wait_decided(pod, seen)

    def lose(self, pod: str) -> None:
        """Stop a pod's agent and wait until every other agent's decision says so."""
        self.agents.stop(pod)
        for other in self.agents.agents:
            self.agents.wait_decided(
                other, lambda d: any(r["node"] == pod and not r["answered"] for r in d["reports"])
            )

    def decisions(self) -> str:
        """Every agent's /recovery now (the decision's inputs), for a failure's message."""
        return "\n".join(
            f"{pod}'s /recovery: {json.dumps(self.agents.recovery(pod), sort_keys=True)}"
            for pod in self.agents.agents
        )

    def peers_of(self, pod: str) -> str:
        return " ".join(
            f"{peer_address(i)}:{self.galera_port}" for i, p in enumerate(PODS) if p != pod
        )

    def run(self, script: str, pod: str, force: str = "") -> Outcome:
        node = self.nodes[pod]
        node.force_bootstrap_pod = force
        return run_start_script(
            script,
            node,
            self.agents.ports[pod],
            galera_peers=self.peers_of(pod),
            status_token=TOKEN,
        )

    def start(self, script: str, pod: str, force: str = "") -> tuple[subprocess.Popen[str], Path]:
        node = self.nodes[pod]
        node.force_bootstrap_pod = force
        return start_script(
            script,
            node,
            self.agents.ports[pod],
            galera_peers=self.peers_of(pod),
            status_token=TOKEN,
        )


@pytest.fixture(scope="module")
def all_pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    pods = Pods(tmp_path_factory.mktemp("pods"))
    try:
        yield pods
    finally:
        pods.agents.stop()
        for held in pods.galera:
            held.close()


@pytest.fixture
def pods(all_pods: Pods) -> Pods:
    all_pods.reset()
    return all_pods


def assert_bootstraps(outcome: Outcome, text: str) -> None:
    assert outcome.returncode == 0, outcome.output
    assert outcome.bootstraps, outcome.output
    assert text in outcome.output, outcome.output
    assert outcome.args is not None and outcome.args[0] == "mariadbd"
    assert not any(TOKEN in a or "ci-root-password" in a for a in outcome.args)


def waits(pods: Pods, script: str, pod: str, text: str, force: str = "") -> str:
    process, output = pods.start(script, pod, force)
    try:
        return wait_output(process, output, text)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{pods.decisions()}") from None
    finally:
        stop_script(process)
        assert not (pods.nodes[pod].rundir / "entrypoint-args").exists(), output.read_text()


def test_the_most_advanced_pod_bootstraps_and_the_others_wait(script: str, pods: Pods) -> None:
    pods.state(p0=(10, 0), p1=(12, 0), p2=(11, 1))
    waits(pods, script, PODS[2], f"waiting for {PODS[1]} to bootstrap")
    waits(pods, script, PODS[0], f"waiting for {PODS[1]} to bootstrap")
    outcome = pods.run(script, PODS[1])
    assert_bootstraps(outcome, f"bootstrap {PODS[1]}: highest position {UUID}:12")
    # Galera refuses --wsrep-new-cluster without it: the script sets it on the chosen pod only
    assert "safe_to_bootstrap: 1" in (pods.nodes[PODS[1]].datadir / "grastate.dat").read_text()
    sst = pods.nodes[PODS[1]].rundir / "sst.cnf"
    assert "ci-root-password" in sst.read_text() and (sst.stat().st_mode & 0o077) == 0


def test_a_new_cluster_is_bootstrapped_by_the_first_pod(script: str, pods: Pods) -> None:
    pods.state(p0=None, p1=None, p2=None)
    waits(pods, script, PODS[1], f"waiting for {PODS[0]} to bootstrap")
    assert_bootstraps(pods.run(script, PODS[0]), "every datadir is empty")


def test_an_empty_datadir_never_bootstraps_while_a_peer_has_data(script: str, pods: Pods) -> None:
    pods.state(p0=None, p1=(7, 0), p2=(8, 0))
    waits(pods, script, PODS[0], f"waiting for {PODS[2]} to bootstrap")
    assert_bootstraps(pods.run(script, PODS[2]), f"highest position {UUID}:8")


def test_an_empty_datadir_never_bootstraps_while_a_peer_cannot_be_asked(
    script: str, pods: Pods
) -> None:
    pods.state(p0=None, p1=None, p2=None)
    pods.lose(PODS[2])
    waits(pods, script, PODS[0], f"waiting, refuse: cannot ask {PODS[2]}")


def test_a_refusal_waits_until_the_operator_forces_the_position_seen(
    script: str, pods: Pods
) -> None:
    """A pod lost for good: the rule refuses; forceBootstrapPod pod:uuid:seqno with the
    position the operator saw bootstraps it, read while the script waits (no restart)."""
    pods.state(p0=(10, 0), p1=(12, 0), p2=(11, 0))
    pods.lose(PODS[2])
    process, output = pods.start(script, PODS[1])
    try:
        wait_output(process, output, f"waiting, refuse: cannot ask {PODS[2]}")
        (pods.nodes[PODS[1]].bootstrap_dir / "force-bootstrap-pod").write_text(
            f"{PODS[1]}:{UUID}:12\n"
        )
        process.wait(timeout=30)
    finally:
        stop_script(process)
    text = output.read_text()
    assert f"bootstrap {PODS[1]}: forced by forceBootstrapPod at {UUID}:12" in text, text
    assert "--wsrep-new-cluster" in (pods.nodes[PODS[1]].rundir / "entrypoint-args").read_text()


def test_a_stale_force_bootstrap_pod_is_ignored_loudly(script: str, pods: Pods) -> None:
    """Left set from an earlier recovery: the position differs now, so it is ignored and the
    rule's own choice stands."""
    pods.state(p0=(10, 0), p1=(12, 0), p2=(11, 1))
    stale = f"{PODS[0]}:{UUID}:9"
    seen = waits(pods, script, PODS[0], f"waiting for {PODS[1]} to bootstrap", force=stale)
    assert f"forceBootstrapPod '{stale}' IGNORED ({PODS[0]} is at {UUID}:10, not {UUID}:9)" in seen
    # the old bare-pod form names no position: ignored too
    seen = waits(pods, script, PODS[2], f"waiting for {PODS[1]} to bootstrap", force=PODS[2])
    assert "IGNORED (expected pod:uuid:seqno" in seen


def test_two_pods_that_could_both_bootstrap_start_at_once_exactly_one_does(
    script: str, pods: Pods
) -> None:
    pods.state(p0=(5, 0), p1=(12, 1), p2=(12, 1))
    started = [pods.start(script, pod) for pod in (PODS[2], PODS[1])]
    try:
        second, first = started
        first[0].wait(timeout=30)
        wait_output(*second, f"waiting for {PODS[1]} to bootstrap")
    finally:
        for process, _ in started:
            stop_script(process)
    assert "--wsrep-new-cluster" in (pods.nodes[PODS[1]].rundir / "entrypoint-args").read_text()
    assert not (pods.nodes[PODS[2]].rundir / "entrypoint-args").exists()


def test_different_uuids_refuse(script: str, pods: Pods) -> None:
    pods.state(p0=(10, 0), p1=(12, 0, OTHER_UUID), p2=(11, 0))
    waits(pods, script, PODS[1], "waiting, refuse: the nodes hold different clusters' data")


def test_a_peers_galera_port_answering_means_join_without_recovery(script: str, pods: Pods) -> None:
    pods.state(p0=(-1, 0), p1=(12, 1), p2=(11, 0))
    with contextlib.contextmanager(pods.galera_answers)(1):
        outcome = pods.run(script, PODS[0])
    assert outcome.returncode == 0 and not outcome.bootstraps, outcome.output
    assert "Galera port answers: joining" in outcome.output
    # a running cluster: no --wsrep-recover, nothing written to the datadir
    assert not (pods.nodes[PODS[0]].datadir / "wsrep-recover.log").exists()


def test_a_hung_agent_does_not_block_the_script(script: str, tmp_path: Path) -> None:
    """The local agent accepts and never answers: the script keeps waiting and says so."""
    node = Node(tmp_path, hostname=SELF)
    node.grastate(seqno=5, safe_to_bootstrap=1, uuid=UUID)
    port = free_ports(1)[0]
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", port))
        silent.listen(8)
        process, output = start_script(
            script, node, port, galera_peers=f"127.0.0.3:{free_ports(1)[0]}"
        )
        try:
            wait_output(process, output, "waiting for the agent's recovery decision", timeout=30)
        finally:
            stop_script(process)
    assert not (node.rundir / "entrypoint-args").exists()


def test_force_bootstrap_lives_outside_the_pod_template(helm: Helm) -> None:
    """Changing forceBootstrapPod changes only the bootstrap ConfigMap: no rolling update (which
    would stall behind the unready pods of a crashed cluster)."""
    plain = helm.render(REFERENCE)
    forced = helm.render(REFERENCE, [f"referenceStatefulSet.forceBootstrapPod={SELF}:{UUID}:7"])
    assert plain.one("StatefulSet") == forced.one("StatefulSet")
    assert plain.one("ConfigMap", f"{STATEFULSET}-galera") == forced.one(
        "ConfigMap", f"{STATEFULSET}-galera"
    )
    cm = forced.one("ConfigMap", f"{STATEFULSET}-bootstrap")
    assert cm["data"]["force-bootstrap-pod"] == f"{SELF}:{UUID}:7"
    pod = forced.one("StatefulSet")["spec"]["template"]["spec"]
    (db,) = [c for c in pod["containers"] if c["name"] == "mariadb"]
    mount = next(m for m in db["volumeMounts"] if m["name"] == "galera-bootstrap")
    assert "subPath" not in mount  # a directory mount: the kubelet updates the file in place
    assert mount["mountPath"] == "/galera/bootstrap"
    assert "FORCE_BOOTSTRAP_POD" not in {e["name"] for e in db["env"]}


def test_the_chart_gives_each_agent_its_datadir_read_only_and_every_peer(helm: Helm) -> None:
    """The reference StatefulSet: datadir and recovery_peers (every pod's agent, on the status
    port) in the agent's TOML; the data volume mounted read-only into the agent container only
    for reading; the start script gets the status port and (with a token) the token by env."""
    rendered = helm.render(
        REFERENCE,
        ["agent.status.port=9300", "auth.statusTokenKey=token", "auth.statusToken=t0ken"],
    )
    config = rendered.agent_config()
    assert config["datadir"] == "/var/lib/mysql"
    peers = dict(p.split("=", 1) for p in config["recovery_peers"].split(","))
    assert list(peers) == PODS
    assert peers[PODS[2]] == f"http://{PODS[2]}.{STATEFULSET}-headless.galera.svc:9300"
    pod = rendered.one("StatefulSet")["spec"]["template"]["spec"]
    agent = next(c for c in pod["containers"] if c["name"] == "galera-health")
    (data,) = [m for m in agent["volumeMounts"] if m["name"] == "data"]
    assert data == {"name": "data", "mountPath": "/var/lib/mysql", "readOnly": True}
    db = next(c for c in pod["containers"] if c["name"] == "mariadb")
    env = {e["name"]: e for e in db["env"]}
    assert env["STATUS_PORT"]["value"] == "9300"
    assert env["STATUS_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"
    assert pod["securityContext"]["fsGroup"] == 999  # how the agent's user reads the files
    # the peers' agents reach the status port through the NetworkPolicy
    policy = rendered.one("NetworkPolicy")
    status_rules = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 9300]
    assert status_rules and any("podSelector" in f for f in status_rules[0]["from"])
    # the old bare pod name is no longer a valid forceBootstrapPod
    with pytest.raises(AssertionError):
        helm.render(REFERENCE, [f"referenceStatefulSet.forceBootstrapPod={SELF}"])
