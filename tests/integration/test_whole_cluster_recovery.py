"""The whole cluster down and back, on real MariaDB Galera nodes (issue 20's six scenarios).

A cluster of its own (full-cluster crashes would destroy the session's test bed), started once
for the module and shared by the scenarios in order, each leaving it Synced. Each node has a
real agent with datadir and recovery_peers (as the chart renders it, behind a status token);
after a crash the rendered start.sh runs for every pod at once (Parallel pod management),
with this machine's mariadbd for its --wsrep-recover, and the test starts each node the way
the script decided (the image's entrypoint is the one piece not on this machine). Rows are
counted: every row whose INSERT returned must be there on every node afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from galera_health.testbed import TestbedError, missing_requirements
from testkit.agent import run_cli

from ..chart.helm import CHART, Helm, helm_or_skip
from ..chart.startscript import (
    Node,
    PodAgents,
    mount_namespace_available,
    render_start_script,
    start_script,
    stop_script,
    wait_output,
)
from .conftest import restore, started_testbed

pytestmark = pytest.mark.galera

PODS = [f"db-galera-health-{i}" for i in range(3)]
TOKEN = "whole-cluster-token"
TABLE = "recovery_rows.t"


class Bed:
    """The cluster, one agent per node (pod names), each pod's start-script directories."""

    def __init__(self, base: Path, helm: Helm) -> None:
        self.script = render_start_script(
            helm, [CHART / "ci" / "reference-statefulset-values.yaml"]
        )
        self.base = base
        self.cluster = started_testbed(size=3)
        self.committed = 0
        try:
            self.node_of = dict(zip(PODS, self.cluster.nodes, strict=True))
            token = base / "token"
            token.write_text(TOKEN + "\n")
            self.state_dirs = {pod: base / pod / "state" for pod in PODS}
            self.pods: dict[str, Node] = {}
            for pod in PODS:
                self.state_dirs[pod].mkdir(parents=True)
                self.pods[pod] = self._pod(pod)
            self.agents = PodAgents(
                {pod: Path(n.datadir) for pod, n in self.node_of.items()},
                {pod: n.socket for pod, n in self.node_of.items()},
                token,
                user=self.cluster.monitor_user,
                extra={
                    pod: [
                        "--password-file",
                        self.cluster.password_file,
                        "--state-dir",
                        str(self.state_dirs[pod]),
                    ]
                    for pod in PODS
                },
            )
            self.node_of[PODS[0]].sql(
                "CREATE DATABASE recovery_rows; "
                "CREATE TABLE recovery_rows.t (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT)"
            )
        except BaseException:
            self.cluster.stop()
            raise

    def _pod(self, pod: str) -> Node:
        node = self.node_of[pod]
        script_dir = self.base / pod
        script_dir.chmod(0o755)
        found = Node(script_dir, hostname=pod)
        found.datadir = Path(node.datadir)
        tools = script_dir / "tools"
        tools.mkdir()
        wrapper = tools / "mariadbd"
        # this machine's mariadbd with the node's own config, as the image's my.cnf would be
        wrapper.write_text(
            "#!/bin/sh\n"
            f"exec {shutil.which('mariadbd', path='/usr/sbin:/usr/bin') or '/usr/sbin/mariadbd'}"
            f' --defaults-file={node.config_file} --user=mysql "$@"\n'
        )
        wrapper.chmod(0o755)
        return found

    def stop(self) -> None:
        self.agents.stop()
        self.cluster.stop()

    # --- writes and counts ------------------------------------------------------------------

    def write(self, pod: str, rows: int) -> None:
        for _ in range(rows):
            self.node_of[pod].sql(f"INSERT INTO {TABLE} (note) VALUES ('{pod}')")
            self.committed += 1

    def counts(self) -> dict[str, int]:
        return {
            pod: int(node.sql(f"SELECT COUNT(*) FROM {TABLE}")[0][0])
            for pod, node in self.node_of.items()
        }

    def wait_applied(self) -> None:
        """Every node has applied every committed row (before a crash)."""
        deadline = time.monotonic() + 60
        while set(self.counts().values()) != {self.committed}:
            assert time.monotonic() < deadline, self.counts()
            time.sleep(0.2)

    # --- faults -----------------------------------------------------------------------------

    def kill(self, *pods: str) -> None:
        """SIGKILL these mariadbd at once (then reap them)."""
        nodes = [self.node_of[p] for p in pods]
        for node in nodes:
            if node.pid is not None:
                os.kill(node.pid, signal.SIGKILL)
        for node in nodes:
            node.kill()
        if all(not n.is_running() for n in self.cluster.nodes):
            self.wait_down()

    def recover(
        self,
        pods: list[str] | None = None,
        forces: dict[str, str] | None = None,
        timeout: float = 240,
    ) -> dict[str, str]:
        """start.sh for these pods at once; each node is started as its script decides, at
        the moment it decides. Returns pod -> "bootstrap" or "join"."""
        running = {}
        for pod in pods or PODS:
            node = self.pods[pod]
            node.force_bootstrap_pod = (forces or {}).get(pod, "")
            peers = " ".join(
                f"127.0.0.1:{n.gcomm_port}" for p, n in self.node_of.items() if p != pod
            )
            running[pod] = start_script(
                self.script, node, self.agents.ports[pod], extra_path=f"{node.base}/tools:",
                galera_peers=peers, status_token=TOKEN,
            )  # fmt: skip
        decided: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        try:
            while len(decided) < len(running):
                for pod, (process, output) in running.items():
                    if pod in decided or process.poll() is None:
                        continue
                    assert process.returncode == 0, output.read_text()
                    args = (self.pods[pod].rundir / "entrypoint-args").read_text().split()
                    bootstrap = "--wsrep-new-cluster" in args
                    self.node_of[pod]._launch(bootstrap=bootstrap)
                    decided[pod] = "bootstrap" if bootstrap else "join"
                if time.monotonic() > deadline:
                    outputs = {p: o.read_text() for p, (_, o) in running.items()}
                    raise AssertionError(f"not every pod decided: {decided}\n{outputs}")
                time.sleep(0.2)
        finally:
            for process, _ in running.values():
                stop_script(process)
        self.outputs = {p: o.read_text() for p, (_, o) in running.items()}
        return decided

    def wait_down(self) -> None:
        """Until every agent's last poll found its mysqld down (one interval after a kill)."""
        for pod in PODS:
            self.agents.wait_decided(
                pod, lambda d: not any(r["running"] for r in d["reports"]), timeout=30
            )

    def cli(self, *extra: str) -> subprocess.CompletedProcess[str]:
        token = self.base / "token"
        flags = [f"--agent={p}=http://127.0.0.1:{port}" for p, port in self.agents.ports.items()]
        return run_cli("recover", *flags, "--token-file", str(token), *extra)

    def wait_positions_known(self) -> dict[str, str]:
        """Until every agent reports its node's position (after --wsrep-recover)."""
        deadline = time.monotonic() + 60
        while True:
            found = {p: (self.agents.recovery(p) or {}).get("nodes", {}) for p in PODS}
            positions = {p: next(iter(n.values()))["position"] for p, n in found.items() if n}
            if len(positions) == 3 and all(positions.values()):
                return positions
            assert time.monotonic() < deadline, found
            time.sleep(0.2)

    def heal(self) -> None:
        """Whatever the last test left (it may have failed half-way): no maintenance file, no
        forceBootstrapPod, every agent up, a Primary component (else every node killed and
        brought back by the start scripts), every node running and Synced, the same rows on
        each. So one failure cannot cascade into the tests after it."""
        for pod in PODS:
            (self.state_dirs[pod] / "maintenance").unlink(missing_ok=True)
            self.pods[pod].force_bootstrap_pod = ""
            (self.pods[pod].bootstrap_dir / "force-bootstrap-pod").unlink(missing_ok=True)
            if pod not in self.agents.agents:
                self.agents.start(pod)
        if not self.primary_component():
            self.kill(*PODS)
            self.recover()
        for node in self.cluster.nodes:
            if node.is_running():  # launched by a script's decision: it may still start
                with contextlib.suppress(TestbedError):  # it exited: restore starts it
                    node.wait_answering(timeout=240)
        restore(self.cluster, timeout=240)
        counts = self.counts()
        assert len(set(counts.values())) == 1, counts
        self.committed = counts[PODS[0]]  # what a failed test's rows came to

    def primary_component(self, timeout: float = 45) -> bool:
        """Whether a running node is in a Primary component (waiting a little while one still
        starts: a bootstrap or a pc.recovery takes seconds; a joiner with no Primary to join
        never gets there)."""
        deadline = time.monotonic() + timeout
        while True:
            running = [n for n in self.cluster.nodes if n.is_running()]
            for node in running:
                try:
                    if node.status("wsrep_cluster_status") == "Primary":
                        return True
                except TestbedError:
                    pass  # still starting, or gone meanwhile
            if not running or time.monotonic() > deadline:
                return False
            time.sleep(0.5)

    def wait_running_without_decision(self, pod: str, timeout: float = 30) -> None:
        """Until pod's agent judges its mysqld running (a fresh poll; under CPU load a verdict
        can be briefly stale, and then the agent legitimately asks the peers); an answer that
        shows the node running never carries a recovery decision."""
        deadline = time.monotonic() + timeout
        while True:
            document = self.agents.recovery(pod)
            if document is not None:
                (node,) = document["nodes"].values()
                if node["running"]:
                    assert document["decision"] is None, document
                    return
            assert time.monotonic() < deadline, f"{pod}: never seen running: {document}"
            time.sleep(0.2)

    def whole(self) -> None:
        for node in self.cluster.nodes:
            node.wait_answering(timeout=240)  # launched as the scripts decided (SST: longer)
        restore(self.cluster, timeout=240)
        counts = self.counts()
        assert set(counts.values()) == {self.committed}, (counts, self.committed)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    problem = missing_requirements()
    if problem is not None:
        pytest.fail(f"real Galera tests need MariaDB Galera: {problem}")
    if not mount_namespace_available():
        pytest.fail("start.sh tests need `unshare --mount` (root) for a private /etc/hosts")
    base = tmp_path_factory.mktemp("whole-cluster")
    base.chmod(0o755)
    found = Bed(base, helm_or_skip())
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture(autouse=True)
def healed(bed: Bed) -> None:
    """Each test starts from the bed whole, whatever the one before left."""
    bed.heal()


def test_6_a_primary_cluster_whose_agents_all_answer_503_is_joined(bed: Bed) -> None:
    """Maintenance on every running node: /health 503 everywhere, yet the cluster is there;
    a restarted node joins it (never a second bootstrap). Once through the Galera port, once
    with the agents' Primary alone (the peers' Galera ports hidden from the script)."""
    bed.write(PODS[0], 5)
    for pod in PODS[:2]:
        (bed.state_dirs[pod] / "maintenance").write_text("issue 20 test\n")
    try:
        for pod in PODS[:2]:
            agent = bed.agents.agents[pod]
            agent.wait_for(lambda a: a.status == 503 and "maintenance" in a.body, timeout=15)
        bed.node_of[PODS[2]].stop()
        # a running node's agent asks nobody and serves no decision (not even one it made
        # while its node was starting or its verdict briefly stale)
        for pod in PODS[:2]:
            bed.wait_running_without_decision(pod)
        assert bed.recover([PODS[2]]) == {PODS[2]: "join"}
        assert "Galera port answers: joining" in bed.outputs[PODS[2]]
        bed.node_of[PODS[2]].wait_synced(timeout=120)
        bed.node_of[PODS[2]].stop()
        node = bed.pods[PODS[2]]
        process, output = start_script(
            bed.script, node, bed.agents.ports[PODS[2]], galera_peers="127.0.0.1:1 127.0.0.1:2",
            status_token=TOKEN,
        )  # fmt: skip
        try:
            process.wait(timeout=60)
        finally:
            stop_script(process)
        text = output.read_text()
        assert "join: a Primary component is running" in text, text
        assert "--wsrep-new-cluster" not in (node.rundir / "entrypoint-args").read_text()
        bed.node_of[PODS[2]]._launch()
    finally:
        for pod in PODS[:2]:
            (bed.state_dirs[pod] / "maintenance").unlink(missing_ok=True)
    bed.whole()


def kill_one_by_one(bed: Bed, first: str, then: tuple[str, str]) -> None:
    """Kill `first`, write on the two left (Primary again), kill `then` at once: `first` is
    behind the other two."""
    bed.write(then[0], 10)
    bed.wait_applied()
    bed.kill(first)
    deadline = time.monotonic() + 60
    while bed.node_of[then[0]].status("wsrep_cluster_size") != "2":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    bed.node_of[then[0]].wait_synced(timeout=60)
    bed.write(then[1], 10)  # only these two have them
    # both have applied them before the kill (applying is asynchronous: killed a moment too
    # soon, then[0] is rightly behind then[1] and the rule ranks then[1] higher, no tie)
    deadline = time.monotonic() + 60
    while len({bed.node_of[p].status("wsrep_last_committed") for p in then}) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    bed.kill(*then)


def seqnos(positions: dict[str, str]) -> dict[str, int]:
    return {p: int(v.rsplit(":", 1)[1]) for p, v in positions.items()}


def test_1_killed_one_by_one_with_writes_in_between(bed: Bed) -> None:
    """Positions differ (the first killed is behind). The first one keeps an older Primary
    view in gvwstate.dat, which stops pc.recovery (measured: all three stay non-Primary), so
    the rule ranks: before the scripts' --wsrep-recover the CLI refuses (positions unknown);
    then the highest position bootstraps (pods 0 and 1 tie: pod-0), the others join, no
    committed row is lost."""
    kill_one_by_one(bed, PODS[2], (PODS[0], PODS[1]))
    refused = bed.cli()
    assert refused.returncode == 1, refused.stdout
    assert refused.stdout.strip().splitlines()[-1].startswith("refuse: the position of"), refused
    decided = bed.recover()
    assert decided == {PODS[0]: "bootstrap", PODS[1]: "join", PODS[2]: "join"}, bed.outputs
    assert f"bootstrap {PODS[0]}: highest position" in bed.outputs[PODS[0]], bed.outputs
    bed.whole()


def test_2_all_killed_at_once_come_back_by_pc_recovery(bed: Bed) -> None:
    bed.write(PODS[2], 10)
    bed.wait_applied()
    bed.kill(*PODS)
    for node in bed.node_of.values():
        assert Path(node.datadir, "gvwstate.dat").exists()  # every member keeps the view
    started = time.monotonic()
    decided = bed.recover()
    assert set(decided.values()) == {"join"}, (decided, bed.outputs)
    assert all("pc.recovery" in text for text in bed.outputs.values()), bed.outputs
    for node in bed.node_of.values():
        node.wait_synced(timeout=120)
    bed.pc_recovery_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    print(f"pc.recovery: all Synced {bed.pc_recovery_seconds:.1f} s after the scripts started")
    assert "restore pc from disk successfully" in Path(bed.node_of[PODS[0]].error_log).read_text()
    bed.whole()


def test_3_a_wiped_datadir_never_bootstraps_the_highest_position_does(bed: Bed) -> None:
    """Killed one by one, then the volume of one of the last two recreated empty: no complete
    Primary view, so the rule ranks. Before the scripts' --wsrep-recover the CLI refuses
    (positions unknown); then pod-1, the highest position (not the lowest ordinal: pod-0 is
    behind), bootstraps, the others join and the empty pod-2 is filled by SST from it."""
    kill_one_by_one(bed, PODS[0], (PODS[1], PODS[2]))
    wipe(bed, PODS[2])
    refused = bed.cli()
    assert refused.returncode == 1, refused.stdout
    assert refused.stdout.strip().splitlines()[-1].startswith("refuse: the position of"), refused
    assert "empty datadir" in refused.stdout
    decided = bed.recover()
    assert decided == {PODS[0]: "join", PODS[1]: "bootstrap", PODS[2]: "join"}, bed.outputs
    assert f"bootstrap {PODS[1]}: highest position" in bed.outputs[PODS[1]], bed.outputs
    bed.whole()  # pod-2 counts every row: it got them by SST from a node with data


def wipe(bed: Bed, pod: str) -> None:
    datadir = Path(bed.node_of[pod].datadir)
    shutil.rmtree(datadir)
    datadir.mkdir()
    shutil.chown(datadir, "mysql", "mysql")
    for other in PODS:  # every agent's next decision sees it empty
        bed.agents.wait_decided(
            other, lambda d: any(r["node"] == pod and r["empty"] for r in d["reports"])
        )


def test_5_two_pods_that_could_both_bootstrap_start_at_once_exactly_one_does(bed: Bed) -> None:
    """Full crash, pod-0's volume recreated empty: pods 1 and 2 tie (killed at once) and start
    at the same moment; exactly one bootstraps (the lowest ordinal), the other waits for it
    and joins, and pod-0 (empty) never bootstraps and gets the data by SST."""
    bed.write(PODS[1], 10)
    bed.wait_applied()
    bed.kill(*PODS)
    wipe(bed, PODS[0])
    decided = bed.recover()
    assert decided == {PODS[0]: "join", PODS[1]: "bootstrap", PODS[2]: "join"}, bed.outputs
    # pod-2 waited (for pod-1's bootstrap, or for positions still unknown) and then joined
    assert "start: waiting" in bed.outputs[PODS[2]], bed.outputs
    assert "joining the running cluster" in bed.outputs[PODS[2]], bed.outputs
    bed.whole()


def test_4_a_stale_force_bootstrap_pod_is_ignored_and_the_right_one_works(bed: Bed) -> None:
    """Full crash and pod-2 cannot be asked (its agent is down): the rule refuses; a
    forceBootstrapPod with an old position is ignored, the position seen now bootstraps."""
    bed.write(PODS[0], 10)
    bed.wait_applied()
    bed.kill(*PODS)
    bed.agents.stop(PODS[2])
    for pod in PODS[:2]:
        bed.agents.wait_decided(pod, lambda d: d["action"] == "refuse")
    try:
        cli = bed.cli()
        assert cli.returncode == 1 and f"cannot ask {PODS[2]}" in cli.stdout, cli.stdout
        # pod-1's own position, as the operator reads it (after its script's --wsrep-recover)
        node = bed.pods[PODS[1]]
        process, output = start_script(
            bed.script, node, bed.agents.ports[PODS[1]], extra_path=f"{node.base}/tools:",
            galera_peers=" ".join(f"127.0.0.1:{bed.node_of[p].gcomm_port}" for p in PODS[::2]),
            status_token=TOKEN,
        )  # fmt: skip
        try:
            wait_output(process, output, f"refuse: cannot ask {PODS[2]}", timeout=120)
            bed.agents.wait_decided(  # its agent has read the recovered position
                PODS[1], lambda d: any(r["node"] == PODS[1] and r["position"] for r in d["reports"])
            )
            position = json.loads(run_cli("recover", "--json", *bed_flags(bed)).stdout)
            (row,) = [r for r in position["nodes"] if r["node"] == PODS[1]]
            uuid, seqno = row["uuid"], row["seqno"]
            assert row["recovered"] is True, row
            force_file = node.bootstrap_dir / "force-bootstrap-pod"
            force_file.write_text(f"{PODS[1]}:{uuid}:{seqno - 1}\n")  # an old recovery's
            wait_output(process, output, "IGNORED", timeout=30)
            assert process.poll() is None, output.read_text()  # still waiting
            force_file.write_text(f"{PODS[1]}:{uuid}:{seqno}\n")
            process.wait(timeout=30)
        finally:
            stop_script(process)
        text = output.read_text()
        assert f"bootstrap {PODS[1]}: forced by forceBootstrapPod at {uuid}:{seqno}" in text, text
        bed.node_of[PODS[1]]._launch(bootstrap=True)
        assert bed.recover([PODS[0]]) == {PODS[0]: "join"}, bed.outputs
    finally:
        bed.agents.start(PODS[2])
    assert bed.recover([PODS[2]]) == {PODS[2]: "join"}, bed.outputs
    bed.pods[PODS[1]].force_bootstrap_pod = ""
    bed.whole()


def bed_flags(bed: Bed) -> list[str]:
    flags = [f"--agent={p}=http://127.0.0.1:{port}" for p, port in bed.agents.ports.items()]
    return [*flags, "--token-file", str(bed.base / "token")]
