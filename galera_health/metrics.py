"""Prometheus exposition, computed at scrape time from the cached store and the poll counters.

Scraping never touches MySQL: the collector reads the store's latest verdicts (an atomic
reference per node) and a copy of each node's PollStats (filled by the poller's job). Each app
gets its own CollectorRegistry, so tests can build several.

The wsrep facts keep the names mysqld_exporter gives them (`mysql_global_status_<name>`,
`mysql_global_variables_<name>`, `mysql_galera_status_info`) and its value mapping (ON/YES 1,
OFF/NO 0, Primary 1, non-Primary/Disconnected 0, numbers as numbers, other text skipped), so
existing Galera alert rules work against the agent.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import __version__
from .facts import DRIVER_MODE, STATUS_NAMES, VARIABLE_NAMES
from .stats import POLL_BUCKETS, PollStats
from .store import NodeView, VerdictStore

# Text status values mysqld_exporter turns into numbers (its parseStatus).
_WORDS = {
    "on": 1.0,
    "yes": 1.0,
    "off": 0.0,
    "no": 0.0,
    "primary": 1.0,
    "non-primary": 0.0,
    "disconnected": 0.0,
}
GALERA_INFO_LABELS = (
    "wsrep_local_state_uuid",
    "wsrep_cluster_state_uuid",
    "wsrep_provider_version",
)


def status_value(text: str) -> float | None:
    """A status/variable value as mysqld_exporter reads it; None when it skips the value."""
    word = _WORDS.get(text.strip().lower())
    if word is not None:
        return word
    try:
        return float(text)
    except ValueError:
        return None


def driver_version() -> str:
    try:
        return version("mysql-connector-python")
    except PackageNotFoundError:  # pragma: no cover - the driver is a hard dependency
        return "unknown"


def build_labels() -> dict[str, str]:
    return {
        "version": __version__,
        "python": platform.python_version(),
        "driver": f"mysql-connector-python {driver_version()}",
        "driver_mode": DRIVER_MODE,
    }


class AgentCollector(Collector):
    """Every metric of the agent, built from the store and PollStats at each collect()."""

    def __init__(
        self,
        store: VerdictStore,
        stats: Mapping[str, PollStats],
        build: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.stats = stats
        self.build = dict(build or build_labels())

    def collect(self) -> Iterable[Metric]:
        views = self.store.views()
        build = GaugeMetricFamily(
            "galera_health_build_info",
            "Which galera-health build answers, on which Python and MySQL driver (always 1).",
            labels=list(self.build),
        )
        build.add_metric(list(self.build.values()), 1.0)
        yield build

        up = GaugeMetricFamily(
            "galera_health_up",
            "1 when the node is usable (the /health/<node> answer is 200), else 0.",
            labels=["node"],
        )
        age = GaugeMetricFamily(
            "galera_health_verdict_age_seconds",
            "Seconds since the node's last verdict (absent before the first one).",
            labels=["node"],
        )
        maintenance = GaugeMetricFamily(
            "galera_health_maintenance",
            "1 when the node is in maintenance (a maintenance file in state_dir).",
            labels=["node"],
        )
        for view in views:
            up.add_metric([view.node], 1.0 if view.healthy else 0.0)
            if view.age_seconds is not None:
                age.add_metric([view.node], view.age_seconds)
            maintenance.add_metric([view.node], 0.0 if view.maintenance is None else 1.0)
        yield from (up, age, maintenance)
        if self.store.writer_enabled:
            writer = GaugeMetricFamily(
                "galera_health_writer",
                "1 when the node is the one writer (the /writer/<node> answer is 200), else 0.",
                labels=["node"],
            )
            for role in self.store.writer_views():
                writer.add_metric([role.node], 1.0 if role.writer else 0.0)
            yield writer
            yield from self._pod_label_metrics()
            yield from self._kill_metrics()
        yield from self._poll_metrics()
        yield from self._wsrep_metrics(views)

    def _pod_label_metrics(self) -> Iterable[Metric]:
        """kubernetes_pod_label: is the pod's label what the lease says, and API failures."""
        in_step = GaugeMetricFamily(
            "galera_health_pod_label_in_step",
            "1 when the node's pod carries the label value its lease role asks for, else 0.",
            labels=["node"],
        )
        errors = CounterMetricFamily(
            "galera_health_pod_label_api_errors_total",
            "Failed Kubernetes API calls of the pod labeler.",
            labels=["node"],
        )
        for node in self.store.nodes:
            state = self.store.pod_label(node)
            if state is not None:
                in_step.add_metric([node], 1.0 if state.in_step else 0.0)
                errors.add_metric([node], float(state.api_errors))
        if in_step.samples:
            yield from (in_step, errors)

    def _kill_metrics(self) -> Iterable[Metric]:
        """writer_users: the old writer's session kills (docs/architecture.md, "Closing the old
        writer's sessions"); absent for a node that never ran one."""
        killed = CounterMetricFamily(
            "galera_health_writer_sessions_killed",
            "Client sessions of writer_users killed after the node stopped being the writer.",
            labels=["node"],
        )
        failed = CounterMetricFamily(
            "galera_health_writer_session_kill_failures",
            "Session kills that did not complete (no privilege, no connection, deadline).",
            labels=["node"],
        )
        blocked = GaugeMetricFamily(
            "galera_health_writer_session_kill_blocked",
            "1 while the last kill (or the privilege check) found it cannot close the sessions.",
            labels=["node"],
        )
        for node in self.store.nodes:
            report = self.store.kill_report(node)
            if report is not None:
                killed.add_metric([node], float(report.killed_total))
                failed.add_metric([node], float(report.failures_total))
                blocked.add_metric([node], 0.0 if report.problem is None else 1.0)
        yield from (killed, failed, blocked)

    def _poll_metrics(self) -> Iterable[Metric]:
        duration = HistogramMetricFamily(
            "galera_health_poll_duration_seconds",
            "Duration of each poll of the node (connect when needed, and the status query).",
            labels=["node"],
        )
        errors = CounterMetricFamily(
            "galera_health_poll_errors_total",
            "Polls that ended in an error, by kind (timeout, unreachable, access_denied, ...).",
            labels=["node", "kind"],
        )
        transitions = CounterMetricFamily(
            "galera_health_transitions_total",
            "Changes of the node's verdict state, by from and to state.",
            labels=["node", "from", "to"],
        )
        skipped = CounterMetricFamily(
            "galera_health_poll_skipped_total",
            "Scheduled polls skipped because the previous poll of the node was still running.",
            labels=["node"],
        )
        for node in self.store.nodes:
            node_stats = self.stats.get(node)
            if node_stats is None:
                continue
            counts = node_stats.counts()
            cumulative, buckets = 0, []
            for bound, count in zip(POLL_BUCKETS, counts.buckets, strict=True):
                cumulative += count
                buckets.append((repr(bound), float(cumulative)))
            buckets.append(("+Inf", float(counts.polls)))
            duration.add_metric([node], buckets, counts.duration_sum)
            for kind, count in sorted(counts.errors.items()):
                errors.add_metric([node, kind], float(count))
            for (from_state, to_state), count in sorted(counts.transitions.items()):
                transitions.add_metric([node, from_state, to_state], float(count))
            skipped.add_metric([node], float(counts.skipped))
        yield from (duration, errors, transitions, skipped)

    def _wsrep_metrics(self, views: Iterable[NodeView]) -> Iterable[Metric]:
        """The facts of each node's current verdict; none for a stale or failed poll (as
        mysqld_exporter has none when its scrape of the server fails)."""
        families: dict[str, GaugeMetricFamily] = {}
        info = GaugeMetricFamily(
            "mysql_galera_status_info",
            "PXC/Galera status information (mysqld_exporter compatible).",
            labels=["node", *GALERA_INFO_LABELS],
        )
        sources = [("global_status", n) for n in STATUS_NAMES]
        sources += [("global_variables", n) for n in VARIABLE_NAMES]
        for view in views:
            verdict = view.verdict
            if verdict is None or view.state == "stale" or not verdict.facts:
                continue
            facts = verdict.facts
            for subsystem, name in sources:
                raw = facts.get(name)
                value = status_value(raw) if raw is not None else None
                if value is None:
                    continue
                metric = f"mysql_{subsystem}_{name}"
                family = families.get(metric)
                if family is None:
                    kind = "SHOW GLOBAL STATUS" if subsystem == "global_status" else "variable"
                    family = families[metric] = GaugeMetricFamily(
                        metric,
                        f"Galera {kind} {name} as mysqld_exporter exports it (cached).",
                        labels=["node"],
                    )
                family.add_metric([view.node], value)
            if facts.get("wsrep_local_state_uuid"):
                info.add_metric(
                    [view.node, *(facts.get(label, "") for label in GALERA_INFO_LABELS)], 1.0
                )
        yield from families.values()
        if info.samples:
            yield info


def make_registry(
    store: VerdictStore,
    stats: Mapping[str, PollStats],
    build: Mapping[str, str] | None = None,
) -> CollectorRegistry:
    """A registry of its own per app (never the process-global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(store, stats, build))
    return registry
