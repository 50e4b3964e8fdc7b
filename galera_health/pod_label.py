"""The role on the pod, pure: which label value the agent's own pod should carry now, what to
do next to get there, and whether the pod is in step with the lease.

The writer Service selects `<key>=writer`, so the label decides where in-cluster clients (a
ClusterIP, the LB IP used from inside the cluster) and the LB send writes; /writer decides
nothing new. The lease stays the one authority: the label follows the store's /writer answer
for the node, never the other way round (docs/architecture.md, "The role on the pod").
Order matters: a pod whose node stops being the writer drops `writer` before anything else; a
new holder takes `writer` off every other pod before it puts it on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

# The label's two values (/status `pod_label.wanted` and `value`): mypy refuses any other.
Label = Literal["writer", "standby"]
WRITER: Label = "writer"
STANDBY: Label = "standby"
# How long a label stays trusted without being written again (someone may edit it), and how
# often the holder looks for another pod still carrying `writer` (an agent killed -9 leaves it).
REFRESH_SECONDS = 30.0
SWEEP_SECONDS = 5.0
# After a failed API call, wait this long before the next try of the same thing (the API being
# down must not be hammered at the tick rate); a change of the wanted value retries at once.
RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class PodLabelState:
    """What /status and /metrics say about the label; published by the labeler job."""

    pod: str
    namespace: str
    key: str
    wanted: Label  # what the lease says now
    applied: Label | None = None  # what the API last accepted for the pod (None: not yet)
    out_of_step_since: float | None = None  # monotonic; None while in step
    error: str | None = None  # the last failed call, one line (None after a success)
    api_errors: int = 0  # failed calls since the start
    cleared: int = 0  # other pods the holder took `writer` off

    @property
    def in_step(self) -> bool:
        return self.applied == self.wanted


def wanted(is_writer: bool) -> Label:
    """The value for the pod: `writer` only while /writer is 200 for its node."""
    return WRITER if is_writer else STANDBY


@dataclass(frozen=True)
class Plan:
    """The calls of one round, in order: sweep others first (only a writer does), then the own
    pod. Neither: nothing to do now."""

    sweep: bool
    own: bool


def plan(
    state: PodLabelState,
    now: float,
    own_due: float,
    sweep_due: float,
    retry_at: float = 0.0,
    failed_for: Label | None = None,
) -> Plan:
    """What to call now. `own_due`/`sweep_due`: monotonic times from which a refresh of the
    own label / a sweep is due. After a failed call made for the value `failed_for`, nothing
    is tried before `retry_at` unless the lease now wants another value (the API being down is
    not hammered, a lost lease is not made to wait)."""
    if failed_for == state.wanted and now < retry_at:
        return Plan(sweep=False, own=False)
    change = state.applied != state.wanted
    if state.wanted == STANDBY:
        # Losing the role: the own label first and alone; no sweep from a standby.
        return Plan(sweep=False, own=change or now >= own_due)
    return Plan(sweep=change or now >= sweep_due, own=change or now >= own_due)


def track(previous: PodLabelState, wanted_now: Label, now: float) -> PodLabelState:
    """The state with the lease's current wish, and since when it is out of step."""
    return _stamp(replace(previous, wanted=wanted_now), now)


def _stamp(state: PodLabelState, now: float) -> PodLabelState:
    if state.in_step:
        since = None
    else:
        since = state.out_of_step_since if state.out_of_step_since is not None else now
    return state if since == state.out_of_step_since else replace(state, out_of_step_since=since)


def applied(state: PodLabelState, value: Label, now: float) -> PodLabelState:
    """The API accepted `value` on the pod."""
    return _stamp(replace(state, applied=value, error=None), now)


def swept(state: PodLabelState, cleared: int) -> PodLabelState:
    """The holder took `writer` off `cleared` other pods (the sweep succeeded)."""
    return replace(state, error=None, cleared=state.cleared + cleared)


def failed(state: PodLabelState, detail: str, now: float, own: bool) -> PodLabelState:
    """A call failed. A failed write of the own label leaves its value unknown: not in step."""
    changed = replace(
        state,
        applied=None if own else state.applied,
        error=detail,
        api_errors=state.api_errors + 1,
    )
    return _stamp(changed, now)
