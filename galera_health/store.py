"""The latest verdict per node, read by HTTP handlers without waiting on anything.

Writers (one poller thread per node) swap an immutable Verdict reference; readers take the
reference and judge its age on the monotonic clock at read time. So a poller that hangs forever
cannot keep a node healthy: its verdict simply grows stale (fail closed).

Each writer has its one narrow method: the poll job `publish`es a verdict, housekeeping
`set_maintenance`, the SIGTERM handler `start_drain`, a reload `reconfigure`s the nodes and
age limits, with --writer a node's lease job `publish_lease`s its part in the election, and
with datadir / recovery_peers the recovery jobs `publish_datadir` and `publish_decision`.
Everything else is read-only.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import lease
from .lease import LeaseState
from .maintenance import Maintenance
from .pod_label import PodLabelState
from .recovery import Datadir, Decision, NodeReport
from .sessions import KillReport
from .verdict import State, Verdict


@dataclass(frozen=True)
class Transition:
    node: str
    at: float  # wall clock
    from_state: State
    to_state: State
    reason: str
    healthy: bool


@dataclass(frozen=True)
class WriterView:
    """What /writer says about one node right now."""

    node: str
    writer: bool
    reason: str
    lease: LeaseState | None
    lease_age_seconds: float | None


@dataclass(frozen=True)
class NodeView:
    """What an HTTP answer says about one node right now."""

    node: str
    healthy: bool
    state: State
    reason: str
    age_seconds: float | None
    verdict: Verdict | None
    maintenance: Maintenance | None = None

    @property
    def running(self) -> bool:
        """mysqld answered the last poll and that poll is still fresh (a stale verdict says
        nothing about mysqld; maintenance and draining do not stop it)."""
        return self.verdict is not None and bool(self.verdict.facts) and self.state != "stale"


class VerdictStore:
    def __init__(
        self,
        nodes: Iterable[str],
        max_age: float,
        history: int = 50,
        clock: Callable[[], float] = time.monotonic,
        healthy_max_age: float | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._nodes: tuple[str, ...] = tuple(nodes)
        self._max_age = max_age
        # a healthy verdict expires sooner: it must not outlive the detection bound
        self._healthy_max_age = max_age if healthy_max_age is None else healthy_max_age
        self._clock = clock  # monotonic: ages and out_since
        self._wall_clock = wall_clock  # for humans: when a transition happened
        self._latest: dict[str, Verdict] = {}
        self._history_size = history
        self._history: dict[str, deque[Transition]] = {n: deque(maxlen=history) for n in self.nodes}
        self._history_lock = threading.Lock()  # held for a deque append or copy, never for I/O
        # The writers of the overlays and the node list (housekeeping's set_maintenance and a
        # reload, the SIGTERM handler's start_drain) change them under this one lock, so each
        # sees the other's change whole and their transitions chain (no I/O while held; taken
        # before _history_lock). Readers take the references without it.
        self._overlay_lock = threading.Lock()
        # Overlays decided outside the poll and applied at read time, so they act at once:
        self._maintenance: dict[str, Maintenance] = {}
        self._draining: str | None = None
        self._out_since: dict[str, float] = {}  # node -> monotonic start of drain/maintenance
        # The writer election (None: --writer is off): each node's lease state, and how long a
        # renewal vouches for the holder.
        self._writer_validity: float | None = None
        self._leases: dict[str, LeaseState] = {}
        self._pod_labels: dict[str, PodLabelState] = {}  # kubernetes_pod_label's job
        # Whole-cluster recovery: the node's datadir as last read (with the monotonic time of
        # the read), and the decision over every peer's agent (recovery_peers).
        self._datadirs: dict[str, tuple[str, Datadir, float]] = {}
        self._decision: tuple[Decision, tuple[NodeReport, ...], float] | None = None
        self._kills: dict[str, KillReport] = {}  # writer_users: each node's session kills

    @property
    def nodes(self) -> tuple[str, ...]:
        return self._nodes

    def clock(self) -> float:
        """The store's monotonic clock: one `now` for several views of one answer."""
        return self._clock()

    @property
    def max_age(self) -> float:
        """Past this age any verdict answers 503 stale."""
        return self._max_age

    @property
    def healthy_max_age(self) -> float:
        """Past this age (counted from its poll's start) a healthy verdict answers 503 stale."""
        return self._healthy_max_age

    def reconfigure(
        self, nodes: Iterable[str], max_age: float, healthy_max_age: float | None = None
    ) -> None:
        """A reload: the new node list and age limits; nodes that stay keep verdicts and history."""
        names = tuple(nodes)
        with self._overlay_lock:
            with self._history_lock:
                for name in names:
                    self._history.setdefault(name, deque(maxlen=self._history_size))
            for gone in set(self._nodes) - set(names):
                self._latest.pop(gone, None)
            self._max_age = max_age
            self._healthy_max_age = max_age if healthy_max_age is None else healthy_max_age
            self._nodes = names

    def set_maintenance(self, maintenance: dict[str, Maintenance]) -> list[Transition]:
        """Swap in which nodes are in maintenance; return the transitions it makes."""
        with self._overlay_lock:
            return self._set_maintenance(maintenance)

    def _set_maintenance(self, maintenance: dict[str, Maintenance]) -> list[Transition]:
        before, now = self._maintenance, self._wall_clock()
        changes: list[Transition] = []
        for node in self.nodes:
            old, new = before.get(node), maintenance.get(node)
            if (old is None) == (new is None):
                continue
            underlying = self._polled_view(node)
            if new is not None:
                changes.append(
                    Transition(node, now, underlying.state, "maintenance", new.description, False)
                )
            else:
                changes.append(
                    Transition(
                        node,
                        now,
                        "maintenance",
                        underlying.state,
                        underlying.reason,
                        underlying.healthy,
                    )
                )
        self._maintenance = dict(maintenance)
        self._update_out_since()
        self._record(changes)
        return changes

    def start_drain(self, reason: str) -> list[Transition]:
        """SIGTERM: every node answers 503 draining from now on; return the transitions."""
        with self._overlay_lock:
            now = self._wall_clock()
            changes = [
                Transition(
                    node, now, self.view(node).state, "draining", f"draining ({reason})", False
                )
                for node in self.nodes
            ]
            self._draining = reason
            self._update_out_since()
            self._record(changes)
            return changes

    def _update_out_since(self) -> None:
        now = self._clock()
        out = {n for n in self.nodes if self._draining is not None or n in self._maintenance}
        self._out_since = {n: self._out_since.get(n, now) for n in out}

    def out_since(self, node: str) -> float | None:
        """Monotonic time since when the agent has held the node out on purpose (drain or
        maintenance), or None."""
        return self._out_since.get(node)

    @property
    def draining(self) -> str | None:
        return self._draining

    def _record(self, transitions: list[Transition]) -> None:
        with self._history_lock:
            for transition in transitions:
                self._history.setdefault(transition.node, deque(maxlen=self._history_size)).append(
                    transition
                )

    def publish(self, verdict: Verdict) -> Transition | None:
        """Swap in a node's new verdict; return the transition if its state changed."""
        previous = self._latest.get(verdict.node)
        self._latest[verdict.node] = verdict
        from_state: State = previous.state if previous is not None else "starting"
        if from_state == verdict.state:
            return None
        transition = Transition(
            node=verdict.node,
            at=verdict.checked_at,
            from_state=from_state,
            to_state=verdict.state,
            reason=verdict.reason,
            healthy=verdict.healthy,
        )
        self._record([transition])
        return transition

    def latest(self, node: str) -> Verdict | None:
        return self._latest.get(node)

    def transitions(self, node: str) -> list[Transition]:
        with self._history_lock:
            return list(self._history.get(node, ()))

    def view(self, node: str, now: float | None = None) -> NodeView:
        """What to answer for a node now: draining and maintenance first, then the poll."""
        polled = self._polled_view(node, now)
        if self._draining is not None:
            reason = f"draining ({self._draining})"
            return NodeView(node, False, "draining", reason, polled.age_seconds, polled.verdict)
        maintenance = self._maintenance.get(node)
        if maintenance is not None:
            return NodeView(
                node,
                False,
                "maintenance",
                maintenance.description,
                polled.age_seconds,
                polled.verdict,
                maintenance,
            )
        return polled

    def _polled_view(self, node: str, now: float | None = None) -> NodeView:
        verdict = self._latest.get(node)
        if verdict is None:
            return NodeView(node, False, "starting", "starting (no verdict yet)", None, None)
        age = (self._clock() if now is None else now) - verdict.checked_mono
        if verdict.healthy:
            # A 200 is judged by the age of its facts, from the poll's start: a poller thread
            # descheduled between reading and publishing cannot stretch it past the bound.
            judged_age, limit, kind = age + verdict.poll_seconds, self.healthy_max_age, "healthy_"
        else:
            judged_age, limit, kind = age, self.max_age, ""
        if judged_age > limit:
            reason = (
                f"stale (last verdict {judged_age:.1f} s old, {kind}max_age {limit:g} s; "
                f"it said {verdict.reason})"
            )
            return NodeView(node, False, "stale", reason, age, verdict)
        return NodeView(node, verdict.healthy, verdict.state, verdict.reason, age, verdict)

    def views(self, now: float | None = None) -> list[NodeView]:
        now = self._clock() if now is None else now
        return [self.view(node, now) for node in self.nodes]

    # --- the writer election (--writer) ---------------------------------------------------

    def enable_writer(self, validity: float) -> None:
        """--writer: /writer answers from the lease states; a renewal vouches `validity` s."""
        self._writer_validity = validity

    @property
    def writer_enabled(self) -> bool:
        return self._writer_validity is not None

    def publish_lease(self, state: LeaseState) -> None:
        """A node's lease job: its latest part in the election (an atomic reference swap)."""
        self._leases[state.node] = state

    def publish_kill(self, node: str, report: KillReport) -> None:
        """A node's lease job after closing the old writer's sessions (an atomic swap)."""
        self._kills[node] = report

    def kill_report(self, node: str) -> KillReport | None:
        return self._kills.get(node)

    def writer_view(self, node: str, now: float | None = None) -> WriterView:
        """/writer for a node: 200 only on the holder of a fresh lease whose /health is 200."""
        now = self._clock() if now is None else now
        if self._writer_validity is None:
            return WriterView(
                node, False, "writer election is off (start the agent with --writer)", None, None
            )
        health = self.view(node, now)
        state = self._leases.get(node)
        writer, reason = lease.answer(
            state, health.healthy, health.reason, now, self._writer_validity
        )
        return WriterView(node, writer, reason, state, lease.lease_age(state, now))

    def publish_pod_label(self, node: str, state: PodLabelState) -> None:
        """The labeler job (kubernetes_pod_label): the role on the node's pod, for /status."""
        self._pod_labels[node] = state

    def pod_label(self, node: str) -> PodLabelState | None:
        return self._pod_labels.get(node)

    def writer_views(self) -> list[WriterView]:
        now = self._clock()
        return [self.writer_view(node, now) for node in self.nodes]

    # --- whole-cluster recovery (datadir, recovery_peers) ------------------------------------

    def publish_datadir(self, node: str, path: str, facts: Datadir) -> None:
        """The datadir job: what the node's files said just now (an atomic reference swap)."""
        self._datadirs[node] = (path, facts, self._clock())

    def datadir(self, node: str) -> tuple[str | None, Datadir | None, float | None]:
        """The node's datadir path, facts and their age in seconds; Nones before a read."""
        found = self._datadirs.get(node)
        if found is None:
            return None, None, None
        return found[0], found[1], self._clock() - found[2]

    def publish_decision(self, decision: Decision, reports: tuple[NodeReport, ...]) -> None:
        self._decision = (decision, reports, self._clock())

    def clear_decision(self) -> None:
        """The node runs: no recovery decision to serve (its agent stops asking)."""
        self._decision = None

    def decision(
        self, now: float | None = None
    ) -> tuple[Decision, tuple[NodeReport, ...], float] | None:
        """The last recovery decision, the reports it was made from, and its age; None while a
        node runs (judged at `now`, like a verdict's age). A decision made while the node was
        down, starting or its verdict briefly stale is never served once a fresh poll finds
        mysqld answering: the recovery job only clears it at its next run, seconds later."""
        found = self._decision
        now = self._clock() if now is None else now
        if found is None or any(view.running for view in self.views(now)):
            return None
        return found[0], found[1], now - found[2]
