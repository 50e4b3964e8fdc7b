"""Scheduler wiring: one APScheduler job per node, never two polls of a node at once.

The job is the only place where probe (I/O), evaluate (pure) and store (swap) meet, and the only
place that logs a node's change of state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from . import maintenance
from .config import ConfigError, NodeAddress, Settings
from .metrics import PollStats
from .probe import NodeProbe, probe_for
from .store import Transition, VerdictStore
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
        # A reload hands over a new probe; the job thread swaps it in, so the one connection of
        # a node is only ever touched by that node's job.
        self.next_probe: NodeProbe | None = None
        self.retired = False
        # kill_sessions: how long after a drain/maintenance began, and which episode was done
        self.kill_sessions_after: float | None = None
        self._killed_for: float | None = None

    def _swap_probe(self) -> None:
        replacement, self.next_probe = self.next_probe, None
        if replacement is not None:
            self.probe.close()
            self.probe = replacement

    def run_once(self) -> Verdict | None:
        if self.retired:
            self.probe.close()
            return None
        started = time.monotonic()
        self.running_since = started
        try:
            self._swap_probe()
            observation = self.probe.poll()
            if self.retired:  # removed by a reload while polling: leave nothing behind
                self.probe.close()
                return None
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
            log_transition(transition)
        self._kill_sessions_if_due()
        return verdict

    def _kill_sessions_if_due(self) -> None:
        out_since = self.store.out_since(self.name)
        after = self.kill_sessions_after
        if after is None or out_since is None or out_since == self._killed_for:
            return
        if time.monotonic() - out_since < after:
            return
        self._killed_for = out_since
        killed, error = self.probe.kill_client_sessions()
        if error is None:
            log.warning(
                "%s: killed %d client session(s) %.0f s after it was taken out",
                self.name,
                killed,
                after,
                extra={"node": self.name, "event": "kill_sessions", "killed": killed},
            )
        else:
            log.error(
                "%s: kill_sessions failed after %d kill(s): %s (the monitor account needs "
                "CONNECTION ADMIN for it)",
                self.name,
                killed,
                error.detail,
                extra={"node": self.name, "event": "kill_sessions"},
            )


HOUSEKEEPING_SECONDS = 0.25


class Poller:
    """The scheduler and its jobs: one poll job per node, and one housekeeping job that applies
    maintenance files, reloads and logs a stuck poll (so no HTTP handler ever has to)."""

    def __init__(
        self,
        settings: Settings,
        store: VerdictStore,
        probe_factory: ProbeFactory = NodeProbe,
        reload_settings: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._probe_factory = probe_factory
        self._reload_settings = reload_settings
        self.nodes: dict[str, NodePoller] = {}
        self.stats_by_node: dict[str, PollStats] = {}  # the same dict for the life of the agent
        self._scheduler = BackgroundScheduler(
            # one thread per node and one for housekeeping; a reload adding nodes adds threads
            executors={"default": ThreadPoolExecutor(max_workers=64)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=timezone.utc,
        )
        self._scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._stuck_logged: set[str] = set()
        self._reload_requested = threading.Event()
        self._config_mtime = self._mtime(settings.config_path)
        for address in settings.nodes:
            self._add_node(address)

    @property
    def policy(self) -> Policy:
        return self.settings.policy

    def _new_probe(self, address: NodeAddress, settings: Settings) -> NodeProbe:
        return probe_for(address, settings, self._probe_factory)

    def _add_node(self, address: NodeAddress) -> NodePoller:
        node = NodePoller(
            address.name, self._new_probe(address, self.settings), self.settings.policy, self.store
        )
        node.kill_sessions_after = self._kill_after(self.settings)
        self.nodes[address.name] = node
        self.stats_by_node[address.name] = node.stats
        return node

    @staticmethod
    def _kill_after(settings: Settings) -> float | None:
        return settings.kill_sessions_after if settings.kill_sessions else None

    def _schedule(self, node: NodePoller) -> None:
        self._scheduler.add_job(
            node.run_once,
            IntervalTrigger(seconds=self.settings.interval),
            id=node.name,
            name=f"poll {node.name}",
            next_run_time=datetime.now(timezone.utc),
            replace_existing=True,
        )

    def start(self) -> None:
        # "skipped: maximum number of running instances reached" once per tick of a hung poll
        # is noise: we count skipped runs instead and log a stuck poll once (housekeeping).
        for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
            logging.getLogger(name).setLevel(logging.ERROR)
        for node in self.nodes.values():
            self._schedule(node)
        self._scheduler.add_job(
            self.housekeeping,
            IntervalTrigger(seconds=HOUSEKEEPING_SECONDS),
            id=" housekeeping",
            next_run_time=datetime.now(timezone.utc),
        )
        self.apply_maintenance()  # before the first HTTP answer: it survives a restart
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for node in self.nodes.values():
            if node.running_since is None:
                node.probe.close()

    def stats(self) -> dict[str, PollStats]:
        return self.stats_by_node

    def poll_now(self, name: str) -> None:
        """Move the node's next run to now; dropped if a poll is in progress (never a second)."""
        self._scheduler.modify_job(name, next_run_time=datetime.now(timezone.utc))

    def _on_skipped(self, event: JobExecutionEvent) -> None:
        node = self.nodes.get(event.job_id)
        if node is not None:
            node.skipped += 1
            node.stats.note_skipped()

    # --- housekeeping: maintenance files, reloads, stuck polls ---------------------------

    def housekeeping(self) -> None:
        self.apply_maintenance()
        if self._reload_requested.is_set() or self._config_changed():
            self._reload_requested.clear()
            self.reload()
        self._log_stuck()

    def apply_maintenance(self) -> None:
        state_dir = self.settings.state_dir
        found = maintenance.scan(state_dir, self.store.nodes) if state_dir else {}
        for transition in self.store.set_maintenance(found):
            log_transition(transition)

    def request_reload(self) -> None:
        """From a SIGHUP handler: the housekeeping job does the work, outside the signal."""
        self._reload_requested.set()

    @staticmethod
    def _mtime(path: str | None) -> float | None:
        if path is None:
            return None
        try:
            return os.stat(path).st_mtime
        except OSError:
            return None

    def _config_changed(self) -> bool:
        mtime = self._mtime(self.settings.config_path)
        if mtime is None or mtime == self._config_mtime:
            return False
        self._config_mtime = mtime
        return True

    def reload(self) -> bool:
        """Apply a new configuration without dropping verdicts or restarting the HTTP server.
        An invalid one is rejected with one log line and the old one kept."""
        if self._reload_settings is None:
            return False
        try:
            new = self._reload_settings()
        except ConfigError as exc:
            log.error(
                "config reload rejected, keeping the running configuration: %s",
                exc,
                extra={"event": "reload_rejected"},
            )
            return False
        old = self.settings
        if new.listen != old.listen:
            log.warning(
                "config reload: listen %s -> %s needs a restart; still serving on %s",
                old.listen.display(),
                new.listen.display(),
                old.listen.display(),
            )
            new = replace(new, listen=old.listen)
        if new.agent_check_listen != old.agent_check_listen:
            log.warning(
                "config reload: agent_check_listen needs a restart; keeping %s",
                old.agent_check_listen.display() if old.agent_check_listen else "it off",
            )
            new = replace(new, agent_check_listen=old.agent_check_listen)
        self.settings = new
        self._config_mtime = self._mtime(new.config_path)
        self.store.max_age = new.max_age
        self.store.healthy_max_age = new.healthy_max_age
        wanted = {address.name: address for address in new.nodes}
        for name in [n for n in self.nodes if n not in wanted]:
            node = self.nodes.pop(name)
            node.retired = True
            self.stats_by_node.pop(name, None)
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(name)
            if node.running_since is None:
                node.probe.close()
        self.store.set_nodes(wanted)
        connection_changed = (
            new.credentials != old.credentials
            or new.timeouts != old.timeouts
            or new.backoff_max != old.backoff_max
            or new.interval != old.interval
            or new.tls != old.tls
        )
        old_addresses = {address.name: address for address in old.nodes}
        for name, address in wanted.items():
            kept = self.nodes.get(name)
            if kept is None:
                self._schedule(self._add_node(address))
                continue
            kept.policy = new.policy
            kept.kill_sessions_after = self._kill_after(new)
            if connection_changed or old_addresses.get(name) != address:
                kept.next_probe = self._new_probe(address, new)
            if new.interval != old.interval:
                self._scheduler.reschedule_job(name, trigger=IntervalTrigger(seconds=new.interval))
        self.apply_maintenance()
        log.info(
            "config reloaded (nodes: %s)",
            ", ".join(f"{a.name}={a.display()}" for a in new.nodes),
            extra={"event": "reload"},
        )
        return True

    def _log_stuck(self) -> None:
        now = time.monotonic()
        for name, node in list(self.nodes.items()):
            started = node.running_since
            stuck = started is not None and now - started > self.settings.stuck_after
            if stuck and name not in self._stuck_logged:
                self._stuck_logged.add(name)
                log.error(
                    "%s: poller stuck beyond every timeout (poll running for %.0f s)",
                    name,
                    now - (started or now),
                    extra={"node": name},
                )
            elif not stuck:
                self._stuck_logged.discard(name)

    def liveness(self) -> tuple[bool, str]:
        """Alive = the scheduler runs and no poll is stuck beyond every deadline it has.
        A frozen database cannot cause that (every step has a timeout); an agent bug can."""
        if not self._scheduler.running:
            return False, "poller stopped"
        now = time.monotonic()
        stuck = []
        for name, node in list(self.nodes.items()):
            started = node.running_since
            if started is not None and now - started > self.settings.stuck_after:
                stuck.append(f"{name} poll running for {now - started:.0f} s")
        if stuck:
            return False, "poller stuck: " + "; ".join(stuck)
        return True, "ok"


def log_transition(transition: Transition) -> None:
    level = logging.INFO if transition.healthy else logging.WARNING
    log.log(
        level,
        "%s: %s -> %s",
        transition.node,
        transition.from_state,
        transition.reason,
        extra={
            "transition": True,
            "node": transition.node,
            "from": transition.from_state,
            "to": transition.to_state,
            "reason": transition.reason,
        },
    )
