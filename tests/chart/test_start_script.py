"""The reference StatefulSet's start.sh decision table, by running the rendered script.

Each case sets up one pod's grastate.dat (or an empty datadir), the bootstrap ConfigMap's
force-bootstrap-pod file and fake peer agents on loopback, runs the real script under bash and
checks what it hands to the image's entrypoint. The rule under test: a peer whose agent answers
200 always wins, so no setting can bootstrap a second cluster next to a running one. The crash
case with no peer (mariadbd --wsrep-recover on a real datadir) runs against the Galera test bed
in tests/integration/test_chart_contract.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from galera_health.testbed import free_ports

from .helm import CHART, Helm
from .startscript import (
    STATEFULSET,
    Node,
    fake_peers,
    mount_namespace_available,
    render_start_script,
    run_start_script,
)

REFERENCE = [CHART / "ci" / "reference-statefulset-values.yaml"]
UUID = "4c2c9a3e-0b1e-11ef-8b7c-6f2d2d0b0b0b"
SELF = f"{STATEFULSET}-0"
OTHER = f"{STATEFULSET}-2"


@pytest.fixture(scope="module")
def script(helm: Helm) -> str:
    if not mount_namespace_available():
        pytest.fail("start.sh tests need `unshare --mount` (root) for a private /etc/hosts")
    return render_start_script(helm, REFERENCE)


@pytest.fixture
def port() -> Iterator[int]:
    yield free_ports(1)[0]


# (case, grastate (seqno, safe) or None = empty datadir, force file, peer statuses, ordinal,
#  expected: bootstrap?, text in the output)
CASES = [
    (
        "force set, a peer healthy: join",
        (120, 0),
        SELF,
        {1: 200, 2: 503},
        0,
        False,
        "NOT force-bootstrapping",
    ),
    (
        "force set, peers unhealthy: bootstrap",
        (-1, 0),
        SELF,
        {1: 503, 2: 503},
        0,
        True,
        "forced bootstrap",
    ),
    ("force set, peers down: bootstrap", (120, 0), SELF, {}, 0, True, "forced bootstrap"),
    (
        "force names another pod: join, print position",
        (120, 0),
        OTHER,
        {},
        0,
        False,
        f"position {UUID}:120",
    ),
    (
        "safe_to_bootstrap, a peer healthy: join",
        (130, 1),
        "",
        {2: 200},
        0,
        False,
        "is healthy: joining",
    ),
    (
        "safe_to_bootstrap, no peer: bootstrap",
        (130, 1),
        "",
        {1: 503},
        0,
        True,
        "safe_to_bootstrap: 1",
    ),
    (
        "empty datadir on bootstrapOrdinal, no peer: new cluster",
        None,
        "",
        {},
        0,
        True,
        "empty datadir",
    ),
    (
        "empty datadir on bootstrapOrdinal, a peer healthy: join",
        None,
        "",
        {1: 200},
        0,
        False,
        "is healthy: joining",
    ),
    ("empty datadir elsewhere, no peer: join and wait", None, "", {}, 1, False, "position none"),
    (
        "crash (seqno -1), a peer healthy: join, no recovery",
        (-1, 0),
        "",
        {1: 200},
        0,
        False,
        "is healthy: joining",
    ),
]


@pytest.mark.parametrize(
    ("case", "grastate", "force", "peers", "ordinal", "bootstraps", "text"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_start_script_decision_table(
    script: str,
    port: int,
    tmp_path: Path,
    case: str,
    grastate: tuple[int, int] | None,
    force: str,
    peers: dict[int, int],
    ordinal: int,
    bootstraps: bool,
    text: str,
) -> None:
    node = Node(tmp_path, hostname=f"{STATEFULSET}-{ordinal}", force_bootstrap_pod=force)
    if grastate is not None:
        node.grastate(seqno=grastate[0], safe_to_bootstrap=grastate[1], uuid=UUID)
    before = (node.datadir / "grastate.dat").read_text() if grastate else None
    with fake_peers(peers, port):
        outcome = run_start_script(script, node, port)
    assert outcome.returncode == 0, outcome.output
    assert outcome.bootstraps is bootstraps, (case, outcome.output)
    assert text in outcome.output, (case, outcome.output)
    assert outcome.args is not None
    assert f"--wsrep-node-name={node.hostname}" in outcome.args
    assert outcome.args[0] == "mariadbd"
    # the SST account's password is in a 0600 file, never in the arguments
    assert not any("ci-root-password" in a for a in outcome.args)
    sst = node.rundir / "sst.cnf"
    assert "ci-root-password" in sst.read_text() and (sst.stat().st_mode & 0o077) == 0
    grastate_now = (node.datadir / "grastate.dat").read_text() if grastate else None
    if "forced bootstrap" in text and grastate is not None:
        assert "safe_to_bootstrap: 1" in str(grastate_now)
    else:
        assert grastate_now == before  # joining or a safe bootstrap never edits grastate.dat
    # recovery (mariadbd --wsrep-recover) runs only when no peer is healthy and not bootstrapping
    assert not (node.rundir / "wsrep-recover.log").exists()


def test_a_peer_that_accepts_but_never_answers_is_not_healthy(
    script: str, port: int, tmp_path: Path
) -> None:
    """A hung peer (a frozen node's agent, a black-holed pod) must not block the start or count
    as healthy: each peer gets 2 s."""
    import socket

    node = Node(tmp_path, force_bootstrap_pod=SELF)
    node.grastate(seqno=5, safe_to_bootstrap=0, uuid=UUID)
    with socket.socket() as silent:
        silent.bind(("127.0.0.3", port))
        silent.listen(8)
        outcome = run_start_script(script, node, port)
    assert outcome.returncode == 0, outcome.output
    assert outcome.bootstraps, outcome.output


def test_force_bootstrap_lives_outside_the_pod_template(helm: Helm) -> None:
    """Changing forceBootstrapPod changes only the bootstrap ConfigMap: no rolling update (which
    would stall behind the unready pods of a crashed cluster)."""
    plain = helm.render(REFERENCE)
    forced = helm.render(REFERENCE, [f"referenceStatefulSet.forceBootstrapPod={SELF}"])
    assert plain.one("StatefulSet") == forced.one("StatefulSet")
    assert plain.one("ConfigMap", f"{STATEFULSET}-galera") == forced.one(
        "ConfigMap", f"{STATEFULSET}-galera"
    )
    cm = forced.one("ConfigMap", f"{STATEFULSET}-bootstrap")
    assert cm["data"]["force-bootstrap-pod"] == SELF
    pod = forced.one("StatefulSet")["spec"]["template"]["spec"]
    (db,) = [c for c in pod["containers"] if c["name"] == "mariadb"]
    mount = next(m for m in db["volumeMounts"] if m["name"] == "galera-bootstrap")
    assert "subPath" not in mount  # a directory mount: the kubelet updates the file in place
    assert mount["mountPath"] == "/galera/bootstrap"
    assert "FORCE_BOOTSTRAP_POD" not in {e["name"] for e in db["env"]}
