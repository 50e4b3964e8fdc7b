"""The decision: what one poll's facts mean for the load balancer. Pure: no I/O, no clock.

evaluate(observation, policy, previous, now) -> Verdict. Everything that depends on time (the
hold-down after a hang) takes `now` as an argument, so a table-driven test can walk every
transition without sleeping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# wsrep_local_state values (Galera's numbering) and the name we report for each.
LOCAL_STATE_NAMES: dict[str, str] = {
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
AGENT_FAULT_KINDS = frozenset(
    {"access_denied", "too_many_connections", "auth_plugin_unsupported", "config_error"}
)

# States in which a node shows it has noticed its own eviction from the Primary component.
EVICTION_SEEN_STATES = frozenset({"non_primary", "disconnected"})

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

    kind: str
    detail: str
    timed_out: bool = False

    @property
    def agent_fault(self) -> bool:
        return self.kind in AGENT_FAULT_KINDS


Observation = Snapshot | ProbeError


@dataclass(frozen=True)
class Policy:
    """Operator choices. hold_down None: derive it from the node's evs.suspect_timeout."""

    hold_down: float | None = None


@dataclass(frozen=True)
class Verdict:
    node: str
    healthy: bool
    state: str
    detail: str
    fault: str | None  # "node", "agent" (our own access) or None when healthy
    checked_at: float  # wall clock, for humans
    checked_mono: float  # monotonic, for ages
    poll_seconds: float
    since: float  # wall clock of the last change of state
    facts: Mapping[str, str] = field(default_factory=dict)
    # hold-down bookkeeping: set by a timeout, cleared after `hold_down` seconds of health
    hold_down_pending: bool = False
    healthy_since_mono: float | None = None
    hold_down_seconds: float | None = None

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


def classify(facts: Mapping[str, str]) -> tuple[str, str]:
    """(state, detail) of a node from its facts alone; state 'synced' means usable."""
    missing = [name for name in REQUIRED_VARIABLES if name not in facts]
    if "wsrep_on" in missing:
        return "unsupported_server", "no wsrep_on variable: not a MariaDB Galera server"
    if not is_on(facts.get("wsrep_on")):
        return "not_galera", "wsrep_on=OFF"
    if missing:
        return "unsupported_server", f"server lacks {', '.join(missing)}"
    connected = facts.get("wsrep_connected")
    if not is_on(connected):
        return "disconnected", f"wsrep_connected={connected if connected is not None else 'absent'}"
    cluster_status = facts.get("wsrep_cluster_status")
    if cluster_status != "Primary":
        shown = cluster_status if cluster_status is not None else "absent"
        return "non_primary", f"wsrep_cluster_status={shown}"
    local_state = facts.get("wsrep_local_state")
    if local_state != "4":
        comment = facts.get("wsrep_local_state_comment")
        shown = f"wsrep_local_state={local_state if local_state is not None else 'absent'}"
        if comment:
            shown += f" ({comment})"
        if local_state == "2" and is_on(facts.get("wsrep_desync")):
            return "desynced", shown + ", wsrep_desync=ON"
        return LOCAL_STATE_NAMES.get(local_state or "", "unknown_state"), shown
    ready = facts.get("wsrep_ready")
    if not is_on(ready):
        return "not_ready", f"wsrep_ready={ready if ready is not None else 'absent'}"
    if is_on(facts.get("wsrep_desync")):
        return "desynced", "wsrep_desync=ON"
    reject = facts.get("wsrep_reject_queries", "NONE")
    if reject.upper() != "NONE":
        return "rejecting_queries", f"wsrep_reject_queries={reject}"
    if is_on(facts.get("read_only")):
        return "read_only", "read_only=ON"
    return "synced", ""


def evaluate(
    observation: Observation,
    policy: Policy,
    previous: Verdict | None,
    node: str,
    now_mono: float,
    now_wall: float,
    poll_seconds: float,
) -> Verdict:
    pending = previous.hold_down_pending if previous is not None else False
    healthy_since: float | None = None
    hold_down: float | None = previous.hold_down_seconds if previous is not None else None
    facts: Mapping[str, str] = {}
    fault: str | None

    if isinstance(observation, ProbeError):
        state, detail = observation.kind, observation.detail
        fault = "agent" if observation.agent_fault else "node"
        if observation.timed_out:
            pending = True
    else:
        facts = observation.facts
        state, detail = classify(facts)
        fault = None if state == "synced" else "node"
        if state in EVICTION_SEEN_STATES:
            # The node has noticed it left the Primary component: its next claim to be in one
            # is current, not the stale view of a thawed process. No hold-down needed after it.
            pending = False
        if state == "synced" and pending:
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
                state = "recovering"
                detail = (
                    f"looks synced for {waited:.1f} s of a {hold_down:g} s hold-down after a "
                    "timeout; a thawed node may still be evicted"
                )
                fault = "node"

    since = now_wall
    if previous is not None and previous.state == state:
        since = previous.since
    return Verdict(
        node=node,
        healthy=state == "synced",
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
    )
