"""Scheduler wiring: one APScheduler job per node, never two polls of a node at once.

The poll job is the only place where probe (I/O), evaluate (pure) and store (swap) meet. Every
change of a node's state is logged by log_transition below: the poll job's, housekeeping's
(maintenance) and the SIGTERM drain's (service.Agent.drain), each once, from the transitions
the store returns.
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

from . import lease, maintenance, recovery
from .config import ConfigError, NodeAddress, NodeSettings, Settings, parse_agents
from .datadir import read_datadir
from .lease import Failure, Identity, LeaseState, Step
from .lease_sql import LeaseClient
from .probe import NodeProbe, probe_for
from .recovery_client import gather
from .sessions_sql import SessionCloser
from .stats import PollStats
from .store import Transition, VerdictStore
from .verdict import Policy, ProbeError, Verdict, evaluate

log = logging.getLogger("galera_health")

ProbeFactory = Callable[..., NodeProbe]


class NodePoller:
    """One node: its probe, its previous verdict, and whether a poll is running right now."""

    def __init__(
        self,
        name: str,
        probe: NodeProbe,
        policy: Policy,
        store: VerdictStore,
        clock: Callable[[], float] = time.monotonic,
        stats: PollStats | None = None,
    ) -> None:
        self.name = name
        self.probe = probe
        self.policy = policy
        self.store = store
        self._clock = clock  # monotonic, the store's clock too (out_since is compared with it)
        self.running_since: float | None = None  # monotonic start of the poll in progress
        # read by /metrics at scrape time; kept across a reload that replaces the node's runtime
        self.stats = stats if stats is not None else PollStats()
        self.retired = False  # a reload removed or replaced it: its job ends, nothing published
        # kill_sessions: how long after a drain/maintenance began, and which episode was done
        self.kill_sessions_after: float | None = None
        self._killed_for: float | None = None

    def run_once(self) -> Verdict | None:
        if self.retired:
            self.probe.close()
            return None
        started = self._clock()
        self.running_since = started
        try:
            observation = self.probe.poll()
            if self.retired:  # removed by a reload while polling: leave nothing behind
                self.probe.close()
                return None
            finished = self._clock()
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
        if self._clock() - out_since < after:
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


def _outcome_text(outcome: lease.Outcome) -> str:
    if isinstance(outcome, Failure):
        return outcome.kind
    if isinstance(outcome, lease.LeaseRow):
        return f"{outcome.holder or '-'} at {outcome.epoch}.{outcome.counter}"
    return "changed" if outcome else "unchanged"


class LeaseRunner:
    """One node's part in the writer election (--writer): a job of its own, over a connection
    of its own, so a lease statement waiting on replication never delays the health poll
    (docs/architecture.md, "One writer"). Each poll: lease.start -> run the step -> lease.advance
    -> ... (at most MAX_STEPS statements), publishing the state after each step."""

    # Read, a take-over that lost, Read again to learn who won, and the renewal that proves it
    # when the winner was our own take-over abandoned at its deadline and committed later.
    MAX_STEPS = 4

    def __init__(
        self,
        name: str,
        client: LeaseClient,
        store: VerdictStore,
        takeover: float,
        period: float,
        tick: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.client = client
        self.store = store
        self.takeover = takeover
        self.period = period  # writer_interval: one lease poll per period
        self.tick = tick  # how often the job is called (the poll interval)
        self._clock = clock
        self.state = LeaseState(name)
        self.retired = False
        self.running_since: float | None = None
        self._due = 0.0
        self._usable: bool | None = None
        self._donor_since: float | None = None  # monotonic: when its node became a Donor
        # (role, failure, holder seen) of the last log line: one line per change of these
        self._logged: tuple[lease.Role, str | None, str | None] = (lease.STARTING, None, None)
        self.closer: SessionCloser | None = None  # writer_users: the old writer's session kill

    def job(self) -> None:
        """The lease job: the lease poll, then the old writer's session kill (writer_users)."""
        self.run_once()
        if self.closer is not None and not self.retired:
            self.closer.run_once()

    def run_once(self) -> LeaseState:
        """Called every tick; polls the lease when lease.next_poll says it is due, or at once
        when its node's usability changed."""
        if self.retired:
            self.client.close()
            return self.state
        started = self._clock()
        health = self.store.view(self.name)
        if health.state == "starting":
            return self.state  # no verdict yet: not asked, neither a candidate nor out
        if health.state != "donor":
            self._donor_since = None
        elif self._donor_since is None:
            self._donor_since = started
        usable = lease.keeps_role(
            self.state, health.healthy, health.state, self._donor_since, started
        )
        # Due once a period; at once when the node's own usability changed (maintenance, drain:
        # the holder releases at the next tick, not a period later).
        if started < self._due - self.tick / 2 and usable == self._usable:
            return self.state
        self._usable = usable
        self.running_since = started
        try:
            state = self._run(usable)
        finally:
            self.running_since = None
            if self.retired:  # replaced or removed by a reload while it ran
                self.client.close()
        self._due = lease.next_poll(state, started, self.period, self.takeover)
        return state

    def _run(self, usable: bool) -> LeaseState:
        """One lease poll, judged with the node's usability run_once read (`usable`)."""
        before = self.state
        found = self.client.connect()
        if isinstance(found, Failure):
            self._set(lease.failed(before, found))
            self._log(before)
            return self.state
        me: Identity = found
        step: Step | None = lease.start(self.state, usable)
        for _ in range(self.MAX_STEPS):
            if step is None:
                break
            started = self._clock()
            outcome = self.client.run(step)
            answered = self._clock()
            log.debug(
                "%s: lease %s -> %s in %.3f s",
                self.name,
                type(step).__name__,
                _outcome_text(outcome),
                answered - started,
                extra={"node": self.name, "event": "lease_step"},
            )
            state, step = lease.advance(
                self.state, step, outcome, me, usable, self.takeover, started, answered
            )
            self._set(state)
        self._log(before)
        return self.state

    def _set(self, state: LeaseState) -> None:
        self.state = state
        if not self.retired:  # a replaced runtime's last poll must not overwrite its successor's
            self.store.publish_lease(state)

    def _log(self, before: LeaseState) -> None:
        after = self.state
        if after.foreign is not None and before.foreign is None:  # once per holder
            log.warning(
                "%s: writer election: %s (the writer account's password may be known to "
                'someone else; docs/architecture.md, "Who may write the lease")',
                self.name,
                after.foreign,
                extra={"node": self.name, "event": "writer_foreign_write"},
            )
        holder = after.row.holder if after.row is not None else None
        logged = (after.role, after.failure, None if after.role == lease.WRITER else holder)
        if logged == self._logged:
            return
        # A transition (never held back by the repeat filter), whose `from` is the last line's
        # `to`: the role as the previous line said it, not as the last poll began.
        was = self._logged[0]
        self._logged = logged
        lost = was == lease.WRITER and after.role != lease.WRITER
        level = logging.WARNING if lost or after.role == lease.UNAVAILABLE else logging.INFO
        log.log(
            level,
            "%s: writer election: %s -> %s: %s",
            self.name,
            was,
            after.role,
            lease.role_text(after),
            extra={
                "transition": True,
                "node": self.name,
                "event": "writer",
                "from": was,
                "to": after.role,
                "holder": holder,
                "epoch": after.row.epoch if after.row is not None else None,
            },
        )


class NodeRuntime:
    """One watched node: its health poll (NodePoller, over its probe's session) and, with
    --writer, its lease (LeaseRunner, over its LeaseClient's session), each with its job, both
    built from one NodeSettings (`built`). A reload that changes any of it replaces the whole
    object (docs/architecture.md, "Reloads: one runtime per node")."""

    def __init__(self, built: NodeSettings, poll: NodePoller, lease: LeaseRunner | None) -> None:
        self.built = built
        self.poll = poll
        self.lease = lease

    @property
    def name(self) -> str:
        return self.poll.name

    def schedule(self, scheduler: BackgroundScheduler) -> None:
        """Its jobs, the first runs now: the poll every interval, the lease job beside it."""
        interval = self.built.interval
        scheduler.add_job(
            self.poll.run_once,
            IntervalTrigger(seconds=interval),
            id=self.name,
            name=f"poll {self.name}",
            next_run_time=datetime.now(timezone.utc),
            replace_existing=True,
        )
        if self.lease is not None:
            scheduler.add_job(
                self.lease.job,
                IntervalTrigger(seconds=interval),
                id=LEASE_JOB + self.name,
                name=f"writer lease {self.name}",
                next_run_time=datetime.now(timezone.utc),
                replace_existing=True,
            )

    def retire(self, scheduler: BackgroundScheduler) -> None:
        """End it: both jobs removed, both connections closed (by the job itself when it is
        running now: it publishes nothing more)."""
        self.poll.retired = True
        with contextlib.suppress(JobLookupError):
            scheduler.remove_job(self.name)
        if self.lease is not None:
            self.lease.retired = True
            with contextlib.suppress(JobLookupError):
                scheduler.remove_job(LEASE_JOB + self.name)
            if self.lease.running_since is None:
                self.lease.client.close()
        if self.poll.running_since is None:
            self.poll.probe.close()

    def close_idle(self) -> None:
        """At stop: close the connections no job is using right now."""
        if self.poll.running_since is None:
            self.poll.probe.close()
        if self.lease is not None and self.lease.running_since is None:
            self.lease.client.close()

    def stuck(self, now: float, after: float, lease: bool = False) -> str | None:
        """Its health poll (or lease poll) when it has been running for longer than `after`."""
        if lease:
            started = self.lease.running_since if self.lease is not None else None
            what = "lease poll"
        else:
            started, what = self.poll.running_since, "poll"
        if started is None or now - started <= after:
            return None
        return f"{self.name} {what} running for {now - started:.0f} s"


HOUSEKEEPING_SECONDS = 0.25
# The datadir is read once a second (three small files): a --wsrep-recover result shows on
# /recovery within about a second. The peers are asked every 2 s, each within its timeout.
DATADIR_SECONDS = 1.0
RECOVERY_SECONDS = 2.0
LEASE_JOB = "writer "


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
        self.runtimes: dict[str, NodeRuntime] = {}  # one per watched node
        self.stats_by_node: dict[str, PollStats] = {}  # the same dict for the life of the agent
        if settings.writer:
            store.enable_writer(settings.writer_validity)
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

    def _add_node(self, address: NodeAddress, stats: PollStats | None = None) -> NodeRuntime:
        """The node's runtime, built from its NodeSettings alone."""
        built = self.settings.node(address)
        node = NodePoller(
            address.name,
            probe_for(built, self._probe_factory),
            self.settings.policy,
            self.store,
            stats=stats,
        )
        node.kill_sessions_after = self._kill_after(self.settings)
        runner = None
        if built.writer:
            runner = LeaseRunner(
                address.name,
                LeaseClient(built),
                self.store,
                built.writer_takeover,
                built.writer_interval,
                built.interval,
            )
            runner.closer = self._closer(runner, self.settings)
        runtime = self.runtimes[address.name] = NodeRuntime(built, node, runner)
        self.stats_by_node[address.name] = node.stats
        return runtime

    def _closer(self, runner: LeaseRunner, settings: Settings) -> SessionCloser:
        """writer_users: kept across a reload of these two settings (its clock and counts)."""
        closer = runner.closer or SessionCloser(runner.name, runner.client, self.store, (), 0.0)
        closer.users, closer.grace = settings.writer_users, settings.writer_kill_grace
        return closer

    def _retire(self, name: str) -> NodeRuntime:
        """End a node's runtime (NodeRuntime.retire) and forget it."""
        runtime = self.runtimes.pop(name)
        runtime.retire(self._scheduler)
        return runtime

    @staticmethod
    def _kill_after(settings: Settings) -> float | None:
        return settings.kill_sessions_after if settings.kill_sessions else None

    def start(self) -> None:
        # "skipped: maximum number of running instances reached" once per tick of a hung poll
        # is noise: we count skipped runs instead and log a stuck poll once (housekeeping).
        for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
            logging.getLogger(name).setLevel(logging.ERROR)
        for runtime in self.runtimes.values():
            runtime.schedule(self._scheduler)
        self._scheduler.add_job(
            self.housekeeping,
            IntervalTrigger(seconds=HOUSEKEEPING_SECONDS),
            id=" housekeeping",
            next_run_time=datetime.now(timezone.utc),
        )
        self._scheduler.add_job(
            self.read_datadir,
            IntervalTrigger(seconds=DATADIR_SECONDS),
            id=" datadir",
            next_run_time=datetime.now(timezone.utc),
        )
        self._scheduler.add_job(
            self.decide_recovery,
            IntervalTrigger(seconds=RECOVERY_SECONDS),
            id=" recovery",
            next_run_time=datetime.now(timezone.utc),
        )
        self.apply_maintenance()  # before the first HTTP answer: it survives a restart
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for runtime in self.runtimes.values():
            runtime.close_idle()

    def stats(self) -> dict[str, PollStats]:
        return self.stats_by_node

    def _on_skipped(self, event: JobExecutionEvent) -> None:
        if event.job_id.startswith(LEASE_JOB):
            return
        runtime = self.runtimes.get(event.job_id)
        if runtime is not None:
            runtime.poll.stats.note_skipped()

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

    def read_datadir(self) -> None:
        """The datadir job: the node's Galera state files into the store (HTTP never reads
        the disk). Nothing to do without datadir (a reload may set it)."""
        path, nodes = self.settings.datadir, self.settings.nodes
        if path is None or len(nodes) != 1:
            return
        self.store.publish_datadir(nodes[0].name, path, read_datadir(path))

    def decide_recovery(self) -> None:
        """The recovery job (recovery_peers): ask every peer's agent for its /recovery, as
        `galera-health recover` does, and publish the decision; log it when it changes. Only
        while this agent's mysqld is down (the decision is how to start it): a running node's
        agent asks nobody, so a healthy cluster carries no recovery traffic."""
        peers = self.settings.recovery_peers
        if peers is None:
            return
        if any(view.running for view in self.store.views()):
            self.store.clear_decision()
            return
        agents = parse_agents(peers.split(","), "recovery_peers")
        token = None
        if self.settings.status_token_file is not None:
            try:
                with open(self.settings.status_token_file, encoding="utf-8") as handle:
                    token = handle.read().strip() or None
            except OSError:
                token = None  # the peers then answer 401, which the decision names
        reports = tuple(gather(agents, token))
        decision = recovery.decide(reports)
        before = self.store.decision()
        self.store.publish_decision(decision, reports)
        if before is None or before[0].line() != decision.line():
            log.info(
                "recovery decision: %s",
                decision.line(),
                extra={"event": "recovery_decision", "action": decision.action},
            )

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
        writer_settings: tuple[str, ...] = ("writer", "writer_priority", "writer_takeover_setting")
        writer_settings += ("kubernetes_pod_label", "kubernetes_api_url")  # the pod labeler too
        if any(getattr(new, key) != getattr(old, key) for key in writer_settings):
            log.warning(
                "config reload: writer, writer_priority and writer_takeover need a restart; "
                "keeping the running ones",
            )
            new = replace(new, **{key: getattr(old, key) for key in writer_settings})
        if new.agent_check_listen != old.agent_check_listen:
            log.warning(
                "config reload: agent_check_listen needs a restart; keeping %s",
                old.agent_check_listen.display() if old.agent_check_listen else "it off",
            )
            new = replace(new, agent_check_listen=old.agent_check_listen)
        self.settings = new
        self._config_mtime = self._mtime(new.config_path)
        wanted = {address.name: address for address in new.nodes}
        for name in [n for n in self.runtimes if n not in wanted]:
            self._retire(name)
            self.stats_by_node.pop(name, None)
        self.store.reconfigure(wanted, new.max_age, new.healthy_max_age)
        if new.writer:
            self.store.enable_writer(new.writer_validity)
        for name, address in wanted.items():
            kept = self.runtimes.get(name)
            stats = None
            if kept is not None and new.node(address) != kept.built:
                # Anything its connections were built from changed (address, credentials, TLS,
                # deadlines, interval): a new runtime, both connections at once, and its lease
                # proven again before this node answers /writer 200 (the row still names it
                # when it is the same node).
                stats = kept.poll.stats
                self._retire(name)
                if new.writer:
                    self.store.publish_lease(LeaseState(name))
                kept = None
            if kept is None:
                self._add_node(address, stats).schedule(self._scheduler)
                continue
            kept.poll.policy = new.policy
            kept.poll.kill_sessions_after = self._kill_after(new)
            if kept.lease is not None:
                self._closer(kept.lease, new)
        self.apply_maintenance()
        log.info(
            "config reloaded (nodes: %s)",
            ", ".join(f"{a.name}={a.display()}" for a in new.nodes),
            extra={"event": "reload"},
        )
        return True

    def _log_stuck(self) -> None:
        now = time.monotonic()
        for name, runtime in list(self.runtimes.items()):
            started = runtime.poll.running_since
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
        """Alive = the scheduler runs and no poll (health or lease) is stuck beyond every
        deadline it has (a lease poll is at most MAX_STEPS statements of 1 s each).
        A frozen database cannot cause that (every step has a timeout); an agent bug can."""
        if not self._scheduler.running:
            return False, "poller stopped"
        now = time.monotonic()
        runtimes, after = list(self.runtimes.values()), self.settings.stuck_after
        stuck = [line for r in runtimes if (line := r.stuck(now, after)) is not None]
        stuck += [line for r in runtimes if (line := r.stuck(now, after, lease=True)) is not None]
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
