"""After the whole cluster went down: what each node's files say, and the one rule that decides
which node may bootstrap (docs/architecture.md, "Whole-cluster recovery").

Pure: text in, facts out; reports in, a decision out. The agent (a background job reads the
files), `galera-health recover` and the reference start script (through its agent) all decide
with `decide`, so they cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# The file the start script (or the operator on a VM) gives mariadbd --wsrep-recover as
# --log-error, in the datadir: its "WSREP: Recovered position: uuid:seqno" line is the position
# of a node that crashed (grastate.dat then says seqno -1).
RECOVERED_LOG = "wsrep-recover.log"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RECOVERED_RE = re.compile(r"WSREP: Recovered position:\s*([0-9a-f-]{36}):(-?\d+)")


@dataclass(frozen=True)
class Position:
    uuid: str
    seqno: int

    def __str__(self) -> str:
        return f"{self.uuid}:{self.seqno}"


@dataclass(frozen=True)
class Grastate:
    """grastate.dat: the state uuid, the last seqno (-1 while running or after a crash) and
    whether this node was the last to leave a Primary component cleanly."""

    uuid: str | None
    seqno: int | None
    safe_to_bootstrap: bool | None


@dataclass(frozen=True)
class Gvwstate:
    """gvwstate.dat: the last Primary view this node was in (pc.recovery re-forms it when
    every member comes back). Deleted by a clean shutdown."""

    my_uuid: str
    view_id: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class Datadir:
    """What a node's datadir says. `recovered`: the position in RECOVERED_LOG, only when it
    belongs to this grastate.dat (same uuid, written after it)."""

    empty: bool
    grastate: Grastate | None = None
    gvwstate: Gvwstate | None = None
    recovered: Position | None = None
    error: str | None = None

    @property
    def position(self) -> Position | None:
        """The last committed transaction, or None when unknown (or there is no data)."""
        state = self.grastate
        if state is not None and state.uuid and state.seqno is not None and state.seqno >= 0:
            return Position(state.uuid, state.seqno)
        return self.recovered

    @property
    def state_uuid(self) -> str | None:
        for uuid in (
            self.grastate.uuid if self.grastate else None,
            self.recovered.uuid if self.recovered else None,
        ):
            if uuid and uuid != ZERO_UUID:
                return uuid
        return None


def _fields(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            found.setdefault(key.strip(), value.strip())
    return found


def _int(text: str | None) -> int | None:
    if text is None or not re.fullmatch(r"-?\d+", text):
        return None
    return int(text)


def parse_grastate(text: str) -> Grastate:
    fields = _fields(text)
    uuid = fields.get("uuid")
    safe = _int(fields.get("safe_to_bootstrap"))
    return Grastate(
        uuid=uuid if uuid and UUID_RE.match(uuid) else None,
        seqno=_int(fields.get("seqno")),
        safe_to_bootstrap=None if safe is None else safe == 1,
    )


def parse_gvwstate(text: str) -> Gvwstate | None:
    """my_uuid, view_id and member lines; None for anything else (a torn file)."""
    my_uuid, view_id, members = None, None, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        words = value.split()
        if key == "my_uuid" and words:
            my_uuid = words[0]
        elif key == "view_id" and words:
            view_id = " ".join(words)
        elif key == "member" and words:
            members.append(words[0])
    if my_uuid is None or view_id is None or not members or "#vwend" not in text:
        return None
    return Gvwstate(my_uuid, view_id, tuple(members))


def parse_recovered(text: str) -> Position | None:
    """The last "WSREP: Recovered position: uuid:seqno" of a --wsrep-recover log."""
    found = RECOVERED_RE.findall(text)
    if not found:
        return None
    uuid, seqno = found[-1]
    return Position(uuid, int(seqno))


def datadir_facts(
    has_data: bool,
    grastate: str | None,
    gvwstate: str | None,
    recovered_log: str | None,
    recovered_is_newer: bool,
) -> Datadir:
    """Datadir from the files' texts (None: absent). A recovered position counts only when it
    was written after grastate.dat (`recovered_is_newer`) and names its uuid: an older log is
    from an earlier crash and would rank the node too low."""
    if grastate is None and not has_data:
        return Datadir(empty=True)
    state = parse_grastate(grastate) if grastate is not None else None
    recovered = parse_recovered(recovered_log) if recovered_log is not None else None
    if recovered is not None:
        same = state is None or state.uuid in (None, ZERO_UUID, recovered.uuid)
        if not (recovered_is_newer and same) or recovered.seqno < 0:
            recovered = None
    view = parse_gvwstate(gvwstate) if gvwstate is not None else None
    return Datadir(empty=False, grastate=state, gvwstate=view, recovered=recovered)


# --- the decision --------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeReport:
    """One node as its agent reported it. `answered` False: the agent could not be asked
    (`detail` says why); `running`/`primary` from the agent's last poll of mysqld."""

    node: str
    answered: bool
    datadir: Datadir | None = None
    running: bool = False
    primary: bool = False
    detail: str = ""


Action = Literal["bootstrap", "join", "refuse"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    node: str | None = None  # the node to bootstrap

    def line(self) -> str:
        if self.action == "bootstrap":
            return f"bootstrap {self.node}: {self.reason}"
        return f"{self.action}: {self.reason}"


def name_order(name: str) -> tuple[str, int, str]:
    """Lowest ordinal first: db-10 after db-9 (a trailing number counts as a number)."""
    match = re.search(r"(\d+)$", name)
    if match is None:
        return (name, -1, name)
    return (name[: match.start()], int(match.group(1)), name)


def _names(reports: Sequence[NodeReport]) -> str:
    return ", ".join(r.node for r in reports)


def _pc_recovery_view(data: Sequence[NodeReport]) -> tuple[str, list[NodeReport]] | None:
    """The last Primary view, when pc.recovery will re-form it: every node with data has that
    view in gvwstate.dat and every member of it is among them. A node with an older view
    (killed earlier) or none (a clean stop) stops Galera from re-forming it: measured here, the
    three then stayed non-Primary (docs/architecture.md, "Whole-cluster recovery")."""
    views = {r.datadir.gvwstate.view_id if r.datadir and r.datadir.gvwstate else None for r in data}
    if len(views) != 1 or None in views:
        return None
    (view_id,) = views
    members = {
        m for r in data if r.datadir and r.datadir.gvwstate for m in r.datadir.gvwstate.members
    }
    present = {r.datadir.gvwstate.my_uuid for r in data if r.datadir and r.datadir.gvwstate}
    if not members <= present:
        return None
    assert view_id is not None
    return view_id, list(data)


def decide(reports: Sequence[NodeReport], assume_lost: Collection[str] = ()) -> Decision:
    """Bootstrap one node, join a running (or self-recovering) Primary component, or refuse
    when it cannot be sure. In order:

    1. a node in a Primary component: join it;
    2. a node that cannot be asked (and is not in assume_lost): refuse;
    3. every datadir empty: bootstrap the first node (a new cluster), unless a lost node may
       hold the data; an empty datadir never bootstraps while a node has data;
    4. positions of different state uuids: refuse;
    5. every node with data has the same last Primary view in gvwstate.dat and every member
       of it is back: join (Galera's pc.recovery re-forms it when they start normally);
    6. a node with data whose position is unknown: refuse;
    7. bootstrap the highest position; ties: the lowest ordinal (name order)."""
    if not reports:
        return Decision("refuse", "no node to decide for")
    primary = [r for r in reports if r.answered and r.primary]
    if primary:
        return Decision(
            "join",
            f"a Primary component is running ({_names(primary)} in it): start the other "
            "nodes normally, they join it",
        )
    lost = [r for r in reports if not r.answered and r.node in assume_lost]
    unasked = [r for r in reports if not r.answered and r.node not in assume_lost]
    if unasked:
        why = "; ".join(f"{r.node}: {r.detail or 'no answer'}" for r in unasked)
        return Decision(
            "refuse",
            f"cannot ask {_names(unasked)} ({why}); start its agent, or name it with "
            "--assume-lost if that node and its data are gone for good",
        )
    unreadable = [r for r in reports if r.answered and (r.datadir is None or r.datadir.error)]
    if unreadable:
        why = "; ".join(
            f"{r.node}: {r.datadir.error if r.datadir else 'no datadir configured'}"
            for r in unreadable
        )
        return Decision(
            "refuse", f"the datadir of {_names(unreadable)} cannot be read ({why}); fix it"
        )
    asked = [r for r in reports if r.answered]
    data = [r for r in asked if r.datadir is not None and not r.datadir.empty]
    if not data:
        if lost:
            return Decision(
                "refuse",
                f"every node asked has an empty datadir and {_names(lost)} (assumed lost) may "
                "have held the data; restore a datadir rather than start an empty cluster",
            )
        first = min(asked, key=lambda r: name_order(r.node))
        return Decision("bootstrap", "every datadir is empty: a new cluster", first.node)
    uuids: dict[str, list[NodeReport]] = {}
    for report in data:
        assert report.datadir is not None
        uuid = report.datadir.state_uuid
        if uuid is not None:
            uuids.setdefault(uuid, []).append(report)
    if len(uuids) > 1:
        shown = "; ".join(f"{uuid}: {_names(group)}" for uuid, group in uuids.items())
        return Decision(
            "refuse",
            f"the nodes hold different clusters' data ({shown}); find out which is the real "
            "one and wipe or reconfigure the others",
        )
    known = {r.node: r.datadir.position for r in data if r.datadir and r.datadir.position}
    recovering = _pc_recovery_view(data)
    if recovering is not None:
        view_id, group = recovering
        return Decision(
            "join",
            f"every node with data ({_names(group)}) was in the last Primary view (view "
            f"{view_id}) and has it in gvwstate.dat: start every node normally (no "
            "--wsrep-new-cluster); Galera's pc.recovery re-forms the Primary component",
        )
    unknown = [r for r in data if r.node not in known]
    if unknown:
        return Decision(
            "refuse",
            f"the position of {_names(unknown)} is unknown (grastate.dat seqno -1 and no "
            f"recovered position); run mariadbd --wsrep-recover --log-error=<datadir>/"
            f"{RECOVERED_LOG} there, then ask again",
        )
    best = min(data, key=lambda r: (-known[r.node].seqno, name_order(r.node)))
    others = ", ".join(f"{r.node} {known[r.node].seqno}" for r in data if r is not best)
    note = f"; assuming {_names(lost)} lost" if lost else ""
    return Decision(
        "bootstrap",
        f"highest position {known[best.node]}" + (f" (others: {others})" if others else "") + note,
        best.node,
    )


# --- forceBootstrapPod: pod:uuid:seqno -------------------------------------------------------


def parse_force(text: str) -> tuple[str, Position] | None:
    """`pod:uuid:seqno` -> (pod, position); None for anything else (a bare pod name included:
    the operator must say which position they saw)."""
    node, sep, rest = text.strip().partition(":")
    uuid, sep2, seqno = rest.rpartition(":")
    if not (node and sep and sep2 and UUID_RE.match(uuid) and re.fullmatch(r"\d+", seqno)):
        return None
    return node, Position(uuid, int(seqno))


def forced(decision: Decision, force: str, reports: Sequence[NodeReport]) -> Decision:
    """The decision with the operator's forceBootstrapPod applied: it names a node and the
    position the operator saw; it bootstraps that node only while no Primary component runs,
    the node still has exactly that position and no node has a higher one. Otherwise the
    decision stands and the reason says loudly why the force was ignored."""
    if not force.strip():
        return decision
    parsed = parse_force(force)

    def ignored(why: str) -> Decision:
        return Decision(
            decision.action,
            f"forceBootstrapPod {force!r} IGNORED ({why}); {decision.reason}",
            decision.node,
        )

    if parsed is None:
        return ignored("expected pod:uuid:seqno, the position you saw")
    node, position = parsed
    if decision.action == "join":
        return ignored("a cluster is running or re-forming")
    found = [r for r in reports if r.node == node]
    if not found or found[0].datadir is None:
        return ignored(f"{node} is not a node asked")
    now = found[0].datadir.position
    if now != position:
        return ignored(f"{node} is at {now or 'an unknown position'}, not {position}")
    higher = [
        r
        for r in reports
        if r.datadir is not None
        and (p := r.datadir.position) is not None
        and p.uuid == position.uuid
        and p.seqno > position.seqno
    ]
    if higher:
        return ignored(f"a higher position on {_names(higher)}")
    return Decision("bootstrap", f"forced by forceBootstrapPod at {position}", node)


# --- the /recovery document: one mapping, used by the agent (out) and the CLI (in) ------------


def node_document(
    datadir_path: str | None,
    facts: Datadir | None,
    read_age: float | None,
    running: bool,
    primary: bool,
    state: str,
) -> dict[str, Any]:
    """One node's entry in /recovery (docs/status.schema.json, "recovery_node")."""
    grastate = facts.grastate if facts is not None else None
    view = facts.gvwstate if facts is not None else None
    position = facts.position if facts is not None else None
    recovered = facts.recovered if facts is not None else None
    error = facts.error if facts is not None else None
    if datadir_path is None:
        error = "no datadir configured (the agent's datadir setting)"
    elif facts is None:
        error = "not read yet"
    return {
        "datadir": datadir_path,
        "read_age_seconds": None if read_age is None else round(read_age, 3),
        "error": error,
        "empty": facts.empty if facts is not None and error is None else None,
        "grastate": None
        if grastate is None
        else {
            "uuid": grastate.uuid,
            "seqno": grastate.seqno,
            "safe_to_bootstrap": grastate.safe_to_bootstrap,
        },
        "gvwstate": None
        if view is None
        else {"my_uuid": view.my_uuid, "view_id": view.view_id, "members": list(view.members)},
        "recovered_position": None if recovered is None else str(recovered),
        "position": None if position is None else str(position),
        "running": running,
        "primary": primary,
        "state": state,
    }


def _position(text: Any) -> Position | None:
    if not isinstance(text, str):
        return None
    uuid, _, seqno = text.rpartition(":")
    number = _int(seqno)
    return Position(uuid, number) if UUID_RE.match(uuid) and number is not None else None


def report_from_document(node: str, document: Mapping[str, Any]) -> NodeReport:
    """A node's /recovery entry (node_document's output, as JSON) back into a NodeReport."""
    running, primary = document.get("running") is True, document.get("primary") is True
    error = document.get("error")
    if error is not None:
        return NodeReport(node, True, Datadir(False, error=str(error)), running, primary)
    grastate = document.get("grastate")
    view = document.get("gvwstate")
    facts = Datadir(
        empty=document.get("empty") is True,
        grastate=None
        if not isinstance(grastate, dict)
        else Grastate(
            grastate.get("uuid"), grastate.get("seqno"), grastate.get("safe_to_bootstrap")
        ),
        gvwstate=None
        if not isinstance(view, dict)
        else Gvwstate(str(view["my_uuid"]), str(view["view_id"]), tuple(view["members"])),
        recovered=_position(document.get("recovered_position")),
    )
    return NodeReport(node, True, facts, running, primary)
