"""Scheduler wiring: one APScheduler job per node, never two polls of a node at once.

The job is the only place where probe (I/O), evaluate (pure) and store (swap) meet, and the only
place that logs a node's change of state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from .config import Settings
from .metrics import PollStats
from .probe import NodeProbe
from .store import VerdictStore
from .verdict import Policy, ProbeError, Verdict, evaluate

log = logging.getLogger("galera_health")

ProbeFactory = Callable[..., NodeProbe]


class NodePoller:
    """One node: its probe, its previous verdict, and whether a poll is running right now."""

    def __init__(self, name: str, probe: NodeProbe, policy: Policy, store: VerdictStore) -> None:
        self.name = name
        self.probe = probe
        self.policy = policy
        self.store = store
        self.running_since: float | None = None  # monotonic start of the poll in progress
        self.polls = 0
        self.skipped = 0
        self.stats = PollStats()  # read by /metrics at scrape time

    def run_once(self) -> Verdict:
        started = time.monotonic()
        self.running_since = started
        try:
            observation = self.probe.poll()
            finished = time.monotonic()
            verdict = evaluate(
                observation,
                self.policy,
                self.store.latest(self.name),
                self.name,
                now_mono=finished,
                now_wall=time.time(),
                poll_seconds=finished - started,
            )
            transition = self.store.publish(verdict)
            self.polls += 1
            self.stats.record(
                verdict.poll_seconds,
                observation.kind if isinstance(observation, ProbeError) else None,
                (transition.from_state, transition.to_state) if transition is not None else None,
            )
        finally:
            self.running_since = None
        if transition is not None:
            level = logging.INFO if transition.healthy else logging.WARNING
            log.log(
                level,
                "%s: %s -> %s",
                self.name,
                transition.from_state,
                verdict.reason,
                extra={
                    "transition": True,
                    "node": self.name,
                    "from": transition.from_state,
                    "to": transition.to_state,
                    "reason": transition.reason,
                },
            )
        return verdict


class Poller:
    def __init__(
        self,
        settings: Settings,
        store: VerdictStore,
        probe_factory: ProbeFactory = NodeProbe,
    ) -> None:
        self.settings = settings
        self.store = store
        policy = Policy(hold_down=settings.hold_down)
        self.nodes: dict[str, NodePoller] = {
            address.name: NodePoller(
                address.name,
                probe_factory(
                    address,
                    settings.credentials,
                    settings.timeouts,
                    settings.interval,
                    settings.backoff_max,
                ),
                policy,
                store,
            )
            for address in settings.nodes
        }
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=len(self.nodes) + 1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=timezone.utc,
        )
        self._scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self.policy = policy
        self._stuck_logged: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        # "skipped: maximum number of running instances reached" once per tick of a hung poll
        # is noise: we count skipped runs instead and report a stuck poll once, in liveness().
        for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
            logging.getLogger(name).setLevel(logging.ERROR)
        now = datetime.now(timezone.utc)
        for name, node in self.nodes.items():
            self._scheduler.add_job(
                node.run_once,
                IntervalTrigger(seconds=self.settings.interval),
                id=name,
                name=f"poll {name}",
                next_run_time=now,
            )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for node in self.nodes.values():
            if node.running_since is None:
                node.probe.close()

    def stats(self) -> dict[str, PollStats]:
        return {name: node.stats for name, node in self.nodes.items()}

    def poll_now(self, name: str) -> None:
        """Move the node's next run to now; dropped if a poll is in progress (never a second)."""
        self._scheduler.modify_job(name, next_run_time=datetime.now(timezone.utc))

    def _on_skipped(self, event: JobExecutionEvent) -> None:
        node = self.nodes.get(event.job_id)
        if node is not None:
            node.skipped += 1
            node.stats.note_skipped()

    def liveness(self) -> tuple[bool, str]:
        """Alive = the scheduler runs and no poll is stuck beyond every deadline it has.
        A frozen database cannot cause that (every step has a timeout); an agent bug can."""
        if not self._scheduler.running:
            return False, "poller stopped"
        now = time.monotonic()
        stuck = []
        for name, node in self.nodes.items():
            started = node.running_since
            if started is not None and now - started > self.settings.stuck_after:
                stuck.append(f"{name} poll running for {now - started:.0f} s")
        with self._lock:
            for entry in stuck:
                name = entry.split(" ", 1)[0]
                if name not in self._stuck_logged:
                    self._stuck_logged.add(name)
                    log.error(
                        "%s: poller stuck beyond every timeout (%s)",
                        name,
                        entry,
                        extra={"node": name},
                    )
            if not stuck:
                self._stuck_logged.clear()
        if stuck:
            return False, "poller stuck: " + "; ".join(stuck)
        return True, "ok"
