"""The whole-cluster recovery rule (galera_health/recovery.py): file parsing and `decide`,
table-driven over every case of issue 20."""

from __future__ import annotations

import pytest

from galera_health.recovery import (
    Datadir,
    Decision,
    Grastate,
    Gvwstate,
    NodeReport,
    Position,
    datadir_facts,
    decide,
    forced,
    name_order,
    parse_force,
    parse_grastate,
    parse_gvwstate,
    parse_recovered,
)

A = "4c2c9a3e-0b1e-11ef-8b7c-6f2d2d0b0b0b"
B = "9d1e0c7a-0b1e-11ef-8b7c-6f2d2d0b0b0b"
GRASTATE = (
    "# GALERA saved state\nversion: 2.1\nuuid:    {u}\nseqno:   {s}\nsafe_to_bootstrap: {b}\n"
)
GVWSTATE = "my_uuid: {me}\n#vwbeg\nview_id: 3 {first} 5\nbootstrap: 0\n" + "{members}#vwend\n"


def gvw(me: str, members: list[str], view: str = "5") -> Gvwstate:
    return Gvwstate(me, f"3 {members[0]} {view}", tuple(members))


def data(
    seqno: int | None,
    uuid: str = A,
    safe: bool = False,
    view: Gvwstate | None = None,
    recovered: int | None = None,
) -> Datadir:
    return Datadir(
        empty=False,
        grastate=Grastate(uuid, -1 if seqno is None else seqno, safe),
        gvwstate=view,
        recovered=Position(uuid, recovered) if recovered is not None else None,
    )


EMPTY = Datadir(empty=True)


def up(node: str, datadir: Datadir, running: bool = False, primary: bool = False) -> NodeReport:
    return NodeReport(node, True, datadir, running, primary)


def down(node: str) -> NodeReport:
    return NodeReport(node, False, detail="connection refused")


# (case, reports, assume_lost, expected action, expected node, text in the reason)
CASES: list[tuple[str, list[NodeReport], tuple[str, ...], str, str | None, str]] = [
    (
        "highest seqno wins",
        [up("n1", data(10)), up("n2", data(12)), up("n3", data(11))],
        (),
        "bootstrap",
        "n2",
        "highest position",
    ),
    (
        "recovered position counts",
        [
            up("n1", data(None, recovered=20)),
            up("n2", data(12)),
            up("n3", data(None, recovered=19)),
        ],
        (),
        "bootstrap",
        "n1",
        f"{A}:20",
    ),
    (
        "tie: lowest ordinal",
        [up("n3", data(12)), up("n2", data(12)), up("n1", data(7))],
        (),
        "bootstrap",
        "n2",
        "highest position",
    ),
    (
        "tie: db-9 before db-10",
        [up("db-10", data(5)), up("db-9", data(5))],
        (),
        "bootstrap",
        "db-9",
        "",
    ),
    (
        "safe_to_bootstrap does not beat a higher seqno",
        [up("n1", data(10, safe=True)), up("n2", data(11))],
        (),
        "bootstrap",
        "n2",
        "",
    ),
    (
        "all empty: a new cluster on the first node",
        [up("n2", EMPTY), up("n1", EMPTY), up("n3", EMPTY)],
        (),
        "bootstrap",
        "n1",
        "new cluster",
    ),
    (
        "empty first node never bootstraps while a peer has data",
        [up("n1", EMPTY), up("n2", data(3)), up("n3", data(4))],
        (),
        "bootstrap",
        "n3",
        "",
    ),
    (
        "empty first node, a peer cannot be asked",
        [up("n1", EMPTY), up("n2", EMPTY), down("n3")],
        (),
        "refuse",
        None,
        "cannot ask n3",
    ),
    (
        "empty nodes, the lost one may have had data",
        [up("n1", EMPTY), up("n2", EMPTY), down("n3")],
        ("n3",),
        "refuse",
        None,
        "may have held the data",
    ),
    (
        "unreachable not assumed lost",
        [up("n1", data(10)), up("n2", data(12)), down("n3")],
        (),
        "refuse",
        None,
        "--assume-lost",
    ),
    (
        "unreachable assumed lost",
        [up("n1", data(10)), up("n2", data(12)), down("n3")],
        ("n3",),
        "bootstrap",
        "n2",
        "assuming n3 lost",
    ),
    (
        "different uuids",
        [up("n1", data(10)), up("n2", data(12, uuid=B))],
        (),
        "refuse",
        None,
        "different clusters",
    ),
    (
        "unknown position",
        [up("n1", data(10)), up("n2", data(None))],
        (),
        "refuse",
        None,
        "position of n2 is unknown",
    ),
    (
        "a Primary component anywhere: join",
        [up("n1", data(None), running=True, primary=True), up("n2", EMPTY), down("n3")],
        (),
        "join",
        None,
        "Primary component is running",
    ),
    (
        "Primary beats different uuids",
        [up("n1", data(1), True, True), up("n2", data(9, B))],
        (),
        "join",
        None,
        "",
    ),
    (
        "a running non-Primary node is no cluster",
        [up("n1", data(None), running=True), up("n2", data(4)), up("n3", data(3))],
        (),
        "refuse",
        None,
        "position of n1 is unknown",
    ),
    (
        "pc.recovery: every member of the last view is back",
        [
            up(n, data(None, view=gvw(u, ["u1", "u2", "u3"])))
            for n, u in (("n1", "u1"), ("n2", "u2"), ("n3", "u3"))
        ],
        (),
        "join",
        None,
        "pc.recovery",
    ),
    (
        "no pc.recovery while a node killed earlier keeps an older view: rank",
        [
            up("n1", data(5, view=gvw("u1", ["u1", "u2", "u3"], "3"))),
            up("n2", data(9, view=gvw("u2", ["u2", "u3"]))),
            up("n3", data(9, view=gvw("u3", ["u2", "u3"]))),
        ],
        (),
        "bootstrap",
        "n2",
        "highest position",
    ),
    (
        "no pc.recovery while a node has no view (a clean stop)",
        [
            up("n1", data(None)),
            up("n2", data(None, view=gvw("u2", ["u2", "u3"]))),
            up("n3", data(None, view=gvw("u3", ["u2", "u3"]))),
        ],
        (),
        "refuse",
        None,
        "unknown",
    ),
    (
        "pc.recovery impossible: a member was wiped",
        [
            up("n1", EMPTY),
            up("n2", data(8, view=gvw("u2", ["u1", "u2", "u3"]))),
            up("n3", data(9, view=gvw("u3", ["u1", "u2", "u3"]))),
        ],
        (),
        "bootstrap",
        "n3",
        "",
    ),
    (
        "pc.recovery impossible and a position unknown",
        [
            up("n1", EMPTY),
            up("n2", data(None, view=gvw("u2", ["u1", "u2", "u3"]))),
            up("n3", data(9, view=gvw("u3", ["u1", "u2", "u3"]))),
        ],
        (),
        "refuse",
        None,
        "unknown",
    ),
    (
        "pc.recovery view behind a node outside it: rank instead",
        [
            up("n1", data(30)),
            up("n2", data(8, view=gvw("u2", ["u2", "u3"]))),
            up("n3", data(9, view=gvw("u3", ["u2", "u3"]))),
        ],
        (),
        "bootstrap",
        "n1",
        "",
    ),
    (
        "an unreadable datadir",
        [up("n1", data(3)), up("n2", Datadir(False, error="denied"))],
        (),
        "refuse",
        None,
        "cannot be read",
    ),
    (
        "no datadir configured on an agent",
        [up("n1", data(3)), NodeReport("n2", True, None)],
        (),
        "refuse",
        None,
        "no datadir configured",
    ),
    ("nothing to decide", [], (), "refuse", None, "no node"),
]


@pytest.mark.parametrize(
    ("case", "reports", "lost", "action", "node", "text"), CASES, ids=[c[0] for c in CASES]
)
def test_decide(
    case: str,
    reports: list[NodeReport],
    lost: tuple[str, ...],
    action: str,
    node: str | None,
    text: str,
) -> None:
    decision = decide(reports, lost)
    assert (decision.action, decision.node) == (action, node), (case, decision)
    assert text in decision.reason, (case, decision)


def test_the_decision_does_not_depend_on_the_order_of_the_reports() -> None:
    reports = [up("n1", data(12)), up("n2", data(12)), up("n3", data(12))]
    assert {decide(reports[::step]).node for step in (1, -1)} == {"n1"}


def test_name_order() -> None:
    assert sorted(["db-10", "db-2", "db-1", "a"], key=name_order) == ["a", "db-1", "db-2", "db-10"]


def test_parse_grastate() -> None:
    state = parse_grastate(GRASTATE.format(u=A, s=-1, b=0))
    assert state == Grastate(A, -1, False)
    assert parse_grastate(GRASTATE.format(u=A, s=42, b=1)) == Grastate(A, 42, True)
    assert parse_grastate("garbage\n") == Grastate(None, None, None)
    assert parse_grastate(GRASTATE.format(u="not-a-uuid", s="x", b="")).uuid is None


def test_parse_gvwstate() -> None:
    members = "member: u1 0\nmember: u2 0\nmember: u3 0\n"
    text = GVWSTATE.format(me="u2", first="u1", members=members)
    assert parse_gvwstate(text) == Gvwstate("u2", "3 u1 5", ("u1", "u2", "u3"))
    assert parse_gvwstate(text.replace("#vwend\n", "")) is None  # torn
    assert parse_gvwstate("") is None


def test_parse_recovered_takes_the_last_line() -> None:
    log = (
        "2026-12-07  5:00:00 0 [Note] WSREP: Recovered position: "
        f"{A}:7\nmore\n2026-12-07 [Note] WSREP: Recovered position: {A}:9\n"
    )
    assert parse_recovered(log) == Position(A, 9)
    assert parse_recovered("nothing here") is None


@pytest.mark.parametrize(
    ("grastate", "log_seqno", "newer", "expected"),
    [
        (GRASTATE.format(u=A, s=-1, b=0), 9, True, Position(A, 9)),
        (GRASTATE.format(u=A, s=-1, b=0), 9, False, None),  # from an earlier crash
        (GRASTATE.format(u=B, s=-1, b=0), 9, True, None),  # another cluster's
        (GRASTATE.format(u=A, s=5, b=0), 9, True, Position(A, 5)),  # clean stop: grastate
        (None, 9, True, Position(A, 9)),
    ],
)
def test_recovered_position_counts_only_when_it_belongs_to_grastate(
    grastate: str | None, log_seqno: int, newer: bool, expected: Position | None
) -> None:
    log = f"[Note] WSREP: Recovered position: {A}:{log_seqno}\n"
    facts = datadir_facts(True, grastate, None, log, newer)
    assert facts.position == expected


def test_an_empty_datadir() -> None:
    assert datadir_facts(False, None, None, None, False).empty
    assert not datadir_facts(True, None, None, None, False).empty  # data but no grastate.dat
    assert datadir_facts(True, None, None, None, False).position is None


BASE = [up("n1", data(10)), up("n2", data(12)), up("n3", data(11))]


@pytest.mark.parametrize(
    ("force", "reports", "action", "node", "text"),
    [
        ("", BASE, "bootstrap", "n2", "highest"),
        (f"n2:{A}:12", BASE, "bootstrap", "n2", "forced"),
        (f"n1:{A}:10", BASE, "bootstrap", "n2", "IGNORED (a higher position on n2, n3)"),
        (f"n3:{A}:9", BASE, "bootstrap", "n2", f"IGNORED (n3 is at {A}:11, not {A}:9)"),
        ("n3", BASE, "bootstrap", "n2", "IGNORED (expected pod:uuid:seqno"),
        (f"n1:{A}:10", [up("n1", data(10)), down("n2")], "bootstrap", "n1", "forced"),
        (
            f"n1:{A}:10",
            [up("n1", data(10)), up("n2", data(None), True, True)],
            "join",
            None,
            "IGNORED (a cluster is running",
        ),
        (f"n9:{A}:10", BASE, "bootstrap", "n2", "IGNORED (n9 is not a node asked)"),
    ],
)
def test_force_bootstrap_names_a_node_and_its_position(
    force: str, reports: list[NodeReport], action: str, node: str | None, text: str
) -> None:
    decision = forced(decide(reports), force, reports)
    assert (decision.action, decision.node) == (action, node), decision
    assert text in decision.reason, decision


def test_parse_force() -> None:
    assert parse_force(f"db-1:{A}:42") == ("db-1", Position(A, 42))
    assert parse_force("db-1") is None
    assert parse_force(f"db-1:{A}:-1") is None


def test_decision_line() -> None:
    assert Decision("bootstrap", "why", "n2").line() == "bootstrap n2: why"
    assert Decision("refuse", "why").line() == "refuse: why"
