"""The decision: what one poll's facts mean for the load balancer. Pure: no I/O, no clock.

evaluate(observation, policy, previous, now) -> Verdict. Everything that depends on time (the
hold-down after a hang) takes `now` as an argument, so a table-driven test can walk every
transition without sleeping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# --- the words a verdict is made of: one type each, so mypy refuses a typo -----------------
# Every state is one word in /health's line, /status (`state`, a transition's `from`/`to`), the
# log and /metrics; docs/status.schema.json lists the same set (a unit test keeps them equal).

# Why a poll produced no facts (ProbeError.kind): a stable word, counted by /metrics per kind.
ProbeKind = Literal[
    "timeout",
    "unreachable",
    "error",
    "unsupported_server",
    "not_ready",
    # the agent's own access (AGENT_FAULT_KINDS)
    "access_denied",
    "too_many_connections",
    "auth_plugin_unsupported",
    "config_error",
    "tls_error",
]
# What the facts of a successful poll say (classify), and evaluate's wait before a rise.
NodeState = Literal[
    "synced",
    "donor",
    "joining",
    "joined",
    "initialized",
    "unknown_state",
    "desynced",
    "disconnected",
    "non_primary",
    "not_ready",
    "rejecting_queries",
    "read_only",
    "standalone",
    "not_galera",
    "unsupported_server",
    "cluster_too_small",
    "lagging",
    "recovering",
]
# Decided by the store at answer time, not by a poll: no verdict yet, a verdict too old, and
# the agent's own holding out (SIGTERM's drain, a maintenance file).
AnswerState = Literal["starting", "stale", "draining", "maintenance"]
State = Literal[NodeState, ProbeKind, AnswerState]
# Whose problem an unusable verdict is: the node's, or the agent's own access.
Fault = Literal["node", "agent"]

# wsrep_local_state values (Galera's numbering) and the name we report for each.
LOCAL_STATE_NAMES: dict[str, NodeState] = {
    "0": "initialized",
    "1": "joining",
    "2": "donor",
    "3": "joined",
    "4": "synced",
}

# Variables the policy cannot decide without: their absence means the server is not a Galera
# node we understand (a plain MySQL, or a variant without the knob), not a passing state.
REQUIRED_VARIABLES = (
    "wsrep_on",
    "wsrep_desync",
    "wsrep_reject_queries",
    "read_only",
)

# Agent-side problems: the node may be fine, our own access is not.
AGENT_FAULT_KINDS: frozenset[ProbeKind] = frozenset(
    {
        "access_denied",
        "too_many_connections",
        "auth_plugin_unsupported",
        "config_error",
        "tls_error",
    }
)

# Measurement hiccups, debounced by `fall`: a loaded node or a rotated password must not take
# every node out at once. Everything else is a fact the node told us and turns 503 at once.
SOFT_STATES: frozenset[State] = frozenset({"timeout", "lagging", "error", *AGENT_FAULT_KINDS})

# States in which a node shows it has noticed its own eviction from the Primary component.
EVICTION_SEEN_STATES: frozenset[State] = frozenset({"non_primary", "disconnected"})

# Galera's default evs.suspect_timeout, used when the node does not tell us its own.
DEFAULT_SUSPECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Snapshot:
    """What one successful poll read: status and variables by lower-case name, raw strings.
    A name may be missing (some wsrep status disappears when the node is disconnected)."""

    facts: Mapping[str, str]
    provider_options: str | None = None


@dataclass(frozen=True)
class ProbeError:
    """Why one poll did not produce a Snapshot. `kind` is a stable word, `detail` one safe line."""

    kind: ProbeKind
    detail: str
    timed_out: bool = False

    @property
    def agent_fault(self) -> bool:
        return self.kind in AGENT_FAULT_KINDS


Observation = Snapshot | ProbeError


@dataclass(frozen=True)
class Policy:
    """Operator choices; the defaults are the strict ones (only Synced/Primary is usable)."""

    hold_down: float | None = None  # None: derive it from the node's evs.suspect_timeout
    available_when_donor: bool = False
    available_when_readonly: bool = False
    allow_standalone: bool = False  # wsrep_on=OFF
    max_recv_queue: int | None = None
    min_cluster_size: int | None = None
    rise: int = 1
    fall: int = 1
    fall_timeout: int | None = None  # None: same as fall
    fall_agent_error: int | None = None  # None: same as fall

    def fall_for(self, state: State) -> int:
        """Consecutive bad polls before a healthy node turns 503, by kind of badness."""
        if state == "timeout" and self.fall_timeout is not None:
            return self.fall_timeout
        if state in AGENT_FAULT_KINDS and self.fall_agent_error is not None:
            return self.fall_agent_error
        return self.fall


@dataclass(frozen=True)
class Classification:
    state: State
    detail: str
    usable: bool


@dataclass(frozen=True)
class Verdict:
    node: str
    healthy: bool
    state: State
    detail: str
    fault: Fault | None  # None when healthy
    checked_at: float  # wall clock, for humans
    checked_mono: float  # monotonic, for ages
    poll_seconds: float
    since: float  # wall clock of the last change of state
    facts: Mapping[str, str] = field(default_factory=dict)
    # hold-down bookkeeping: set by a timeout, cleared after `hold_down` seconds of health
    hold_down_pending: bool = False
    healthy_since_mono: float | None = None
    hold_down_seconds: float | None = None
    # rise/fall bookkeeping: consecutive usable / unusable polls
    good_streak: int = 0
    bad_streak: int = 0

    @property
    def reason(self) -> str:
        return f"{self.state} ({self.detail})" if self.detail else self.state


def parse_duration(text: str) -> float | None:
    """Galera's ISO 8601 durations (PT3S, PT1.5S, PT1M30S, P1D) in seconds; None if not one."""
    match = re.fullmatch(
        r"P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?",
        text.strip(),
    )
    if not match or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def provider_option(options: str, name: str) -> str | None:
    """One `key = value` from wsrep_provider_options (`a = 1; b = PT3S; ...`)."""
    for item in options.split(";"):
        key, sep, value = item.partition("=")
        if sep and key.strip() == name:
            return value.strip()
    return None


def hold_down_for(policy: Policy, provider_options: str | None) -> float:
    """A thawed node claims Synced/Primary until it notices it was evicted: measured here about
    evs.suspect_timeout + 1 s after the thaw, every time (4.0 s at PT3S, 6.0 s at PT5S). Hold it
    out for twice its suspect timeout (at least the timeout + 2 s) so that window is covered."""
    if policy.hold_down is not None:
        return policy.hold_down
    suspect = None
    if provider_options:
        raw = provider_option(provider_options, "evs.suspect_timeout")
        suspect = parse_duration(raw) if raw else None
    if suspect is None:
        suspect = DEFAULT_SUSPECT_TIMEOUT
    return max(2 * suspect, suspect + 2)


def is_on(value: str | None) -> bool:
    return value is not None and value.strip().upper() in ("ON", "1", "TRUE", "YES")


def _shown(facts: Mapping[str, str], name: str) -> str:
    value = facts.get(name)
    return f"{name}={value if value is not None else 'absent'}"


def classify(facts: Mapping[str, str], policy: Policy = Policy()) -> Classification:
    """What the facts alone say about a node under a policy. Checks run from the gravest fact
    down, so the reason names the first thing an operator must fix."""
    missing = [name for name in REQUIRED_VARIABLES if name not in facts]
    if "wsrep_on" in missing:
        return Classification(
            "unsupported_server", "no wsrep_on variable: not a MariaDB Galera server", False
        )
    allowed: Classification | None = None
    if not is_on(facts.get("wsrep_on")):
        if not policy.allow_standalone:
            return Classification("not_galera", "wsrep_on=OFF", False)
        allowed = Classification("standalone", "wsrep_on=OFF, allowed by allow_standalone", True)
    else:
        if missing:
            return Classification("unsupported_server", f"server lacks {', '.join(missing)}", False)
        node_problem = galera_problem(facts, policy)
        if node_problem is not None and not node_problem.usable:
            return node_problem
        allowed = node_problem
    if is_on(facts.get("read_only")):
        if not policy.available_when_readonly:
            return Classification("read_only", "read_only=ON", False)
        if allowed is None:
            allowed = Classification(
                "read_only", "read_only=ON, allowed by available_when_readonly", True
            )
    return allowed or Classification("synced", "", True)


def galera_problem(facts: Mapping[str, str], policy: Policy) -> Classification | None:
    """The first wsrep fact that makes the node unusable (or usable only by policy), or None."""
    if not is_on(facts.get("wsrep_connected")):
        return Classification("disconnected", _shown(facts, "wsrep_connected"), False)
    if facts.get("wsrep_cluster_status") != "Primary":
        return Classification("non_primary", _shown(facts, "wsrep_cluster_status"), False)
    allowed: Classification | None = None
    local_state = facts.get("wsrep_local_state")
    if local_state != "4":
        shown = _shown(facts, "wsrep_local_state")
        comment = facts.get("wsrep_local_state_comment")
        if comment:
            shown += f" ({comment})"
        if local_state == "2" and is_on(facts.get("wsrep_desync")):
            # wsrep_desync=ON reports the same state 2 as a donor: an operator's desync is never
            # a donor the policy may keep.
            return Classification("desynced", shown + ", wsrep_desync=ON", False)
        state = LOCAL_STATE_NAMES.get(local_state or "", "unknown_state")
        if state != "donor" or not policy.available_when_donor:
            return Classification(state, shown, False)
        if is_on(facts.get("wsrep_sst_donor_rejects_queries")):
            return Classification("donor", shown + ", wsrep_sst_donor_rejects_queries=ON", False)
        allowed = Classification("donor", shown + ", allowed by available_when_donor", True)
    if not is_on(facts.get("wsrep_ready")):
        return Classification("not_ready", _shown(facts, "wsrep_ready"), False)
    if is_on(facts.get("wsrep_desync")):
        return Classification("desynced", "wsrep_desync=ON", False)
    reject = facts.get("wsrep_reject_queries", "NONE")
    if reject.upper() != "NONE":
        return Classification("rejecting_queries", f"wsrep_reject_queries={reject}", False)
    if policy.min_cluster_size is not None:
        size = as_int(facts.get("wsrep_cluster_size"))
        if size is None or size < policy.min_cluster_size:
            return Classification(
                "cluster_too_small",
                f"{_shown(facts, 'wsrep_cluster_size')} < min_cluster_size "
                f"{policy.min_cluster_size}",
                False,
            )
    if policy.max_recv_queue is not None:
        queue = as_int(facts.get("wsrep_local_recv_queue"))
        if queue is None or queue > policy.max_recv_queue:
            return Classification(
                "lagging",
                f"{_shown(facts, 'wsrep_local_recv_queue')} > max_recv_queue "
                f"{policy.max_recv_queue}",
                False,
            )
    return allowed


def as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def evaluate(
    observation: Observation,
    policy: Policy,
    previous: Verdict | None,
    node: str,
    now_mono: float,
    now_wall: float,
    poll_seconds: float,
) -> Verdict:
    """One poll's meaning, given what the node looked like before (HAProxy-style rise/fall,
    the hold-down after a hang)."""
    was_healthy = previous is not None and previous.healthy
    pending = previous.hold_down_pending if previous is not None else False
    hold_down: float | None = previous.hold_down_seconds if previous is not None else None
    healthy_since: float | None = None
    facts: Mapping[str, str] = {}

    if isinstance(observation, ProbeError):
        found = Classification(observation.kind, observation.detail, False)
        fault: Fault | None = "agent" if observation.agent_fault else "node"
        if observation.timed_out:
            pending = True
    else:
        facts = observation.facts
        found = classify(facts, policy)
        fault = None if found.usable else "node"
        if found.state in EVICTION_SEEN_STATES:
            # The node has noticed it left the Primary component: its next claim to be in one
            # is current, not the stale view of a thawed process. No hold-down needed after it.
            pending = False

    good = (previous.good_streak + 1 if previous is not None else 1) if found.usable else 0
    bad = 0 if found.usable else (previous.bad_streak + 1 if previous is not None else 1)
    state, detail, healthy = found.state, found.detail, found.usable

    if was_healthy and previous is not None:
        pending = pending and not found.usable
        if not found.usable and found.state in SOFT_STATES:
            limit = policy.fall_for(found.state)
            if bad < limit:
                # Debounced: still in service, and /status says why it might not be soon.
                state, healthy, fault = previous.state, True, None
                said = f"{found.state} ({found.detail})" if found.detail else found.state
                detail = f"{said}; bad poll {bad} of {limit} before fall"
    elif found.usable:
        waits: list[str] = []
        if pending and not isinstance(observation, ProbeError):
            hold_down = hold_down_for(policy, observation.provider_options)
            healthy_since = (
                previous.healthy_since_mono
                if previous is not None and previous.healthy_since_mono is not None
                else now_mono
            )
            waited = now_mono - healthy_since
            if waited >= hold_down:
                pending, healthy_since = False, None
            else:
                waits.append(
                    f"looks {found.state} for {waited:.1f} s of a {hold_down:g} s hold-down "
                    "after a timeout; a thawed node may still be evicted"
                )
        if good < policy.rise:
            waits.append(f"good poll {good} of {policy.rise} before rise")
        if waits:
            state, detail, healthy, fault = "recovering", "; ".join(waits), False, "node"

    since = now_wall
    if previous is not None and previous.state == state:
        since = previous.since
    return Verdict(
        node=node,
        healthy=healthy,
        state=state,
        detail=detail,
        fault=fault,
        checked_at=now_wall,
        checked_mono=now_mono,
        poll_seconds=poll_seconds,
        since=since,
        facts=facts,
        hold_down_pending=pending,
        healthy_since_mono=healthy_since,
        hold_down_seconds=hold_down,
        good_streak=good,
        bad_streak=bad,
    )
