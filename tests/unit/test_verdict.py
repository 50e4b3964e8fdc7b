"""The pure decision: every wsrep state, every combination the policy reads, the hold-down."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from galera_health.verdict import (
    Policy,
    ProbeError,
    Snapshot,
    Verdict,
    classify,
    evaluate,
    hold_down_for,
    parse_duration,
    provider_option,
)

from ..samples import SYNCED


def facts(**changes: str | None) -> dict[str, str]:
    result = dict(SYNCED)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


@pytest.mark.parametrize(
    ("changes", "state", "detail"),
    [
        ({}, "synced", ""),
        (
            {"wsrep_cluster_status": "non-Primary"},
            "non_primary",
            "wsrep_cluster_status=non-Primary",
        ),
        (
            {"wsrep_cluster_status": "Disconnected"},
            "non_primary",
            "wsrep_cluster_status=Disconnected",
        ),
        ({"wsrep_cluster_status": None}, "non_primary", "wsrep_cluster_status=absent"),
        ({"wsrep_connected": "OFF"}, "disconnected", "wsrep_connected=OFF"),
        ({"wsrep_connected": None}, "disconnected", "wsrep_connected=absent"),
        (
            {"wsrep_local_state": "1", "wsrep_local_state_comment": "Joining"},
            "joining",
            "wsrep_local_state=1 (Joining)",
        ),
        (
            {"wsrep_local_state": "2", "wsrep_local_state_comment": "Donor/Desynced"},
            "donor",
            "wsrep_local_state=2 (Donor/Desynced)",
        ),
        (
            {
                "wsrep_local_state": "2",
                "wsrep_local_state_comment": "Donor/Desynced",
                "wsrep_desync": "ON",
            },
            "desynced",
            "wsrep_local_state=2 (Donor/Desynced), wsrep_desync=ON",
        ),
        (
            {"wsrep_local_state": "3", "wsrep_local_state_comment": "Joined"},
            "joined",
            "wsrep_local_state=3 (Joined)",
        ),
        (
            {"wsrep_local_state": "0", "wsrep_local_state_comment": "Initialized"},
            "initialized",
            "wsrep_local_state=0 (Initialized)",
        ),
        (
            {"wsrep_local_state": "7", "wsrep_local_state_comment": None},
            "unknown_state",
            "wsrep_local_state=7",
        ),
        ({"wsrep_ready": "OFF"}, "not_ready", "wsrep_ready=OFF"),
        ({"wsrep_desync": "ON"}, "desynced", "wsrep_desync=ON"),
        ({"wsrep_reject_queries": "ALL"}, "rejecting_queries", "wsrep_reject_queries=ALL"),
        (
            {"wsrep_reject_queries": "ALL_KILL"},
            "rejecting_queries",
            "wsrep_reject_queries=ALL_KILL",
        ),
        ({"read_only": "ON"}, "read_only", "read_only=ON"),
        ({"wsrep_on": "OFF"}, "not_galera", "wsrep_on=OFF"),
        (
            {"wsrep_on": None},
            "unsupported_server",
            "no wsrep_on variable: not a MariaDB Galera server",
        ),
        ({"wsrep_reject_queries": None}, "unsupported_server", "server lacks wsrep_reject_queries"),
        (
            {"read_only": None, "wsrep_desync": None},
            "unsupported_server",
            "server lacks wsrep_desync, read_only",
        ),
    ],
)
def test_classify_each_state(changes: dict[str, str | None], state: str, detail: str) -> None:
    found = classify(facts(**changes))
    assert (found.state, found.detail, found.usable) == (state, detail, state == "synced")


def test_split_beats_every_other_fact() -> None:
    # A split node that is also read-only must be reported for the split, the bigger problem.
    found = classify(facts(wsrep_cluster_status="non-Primary", read_only="ON", wsrep_ready="OFF"))
    assert found.state == "non_primary"


TRUTHY = st.sampled_from(["ON", "OFF", "1", "0", "on", "off", ""])
FACT_VALUES = {
    "wsrep_on": st.sampled_from(["ON", "OFF"]),
    "wsrep_connected": TRUTHY,
    "wsrep_cluster_status": st.sampled_from(["Primary", "non-Primary", "Disconnected"]),
    "wsrep_local_state": st.sampled_from(["0", "1", "2", "3", "4", "5"]),
    "wsrep_ready": TRUTHY,
    "wsrep_desync": TRUTHY,
    "wsrep_reject_queries": st.sampled_from(["NONE", "ALL", "ALL_KILL", "none"]),
    "read_only": TRUTHY,
}


@st.composite
def any_facts(draw: st.DrawFn) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, strategy in FACT_VALUES.items():
        if draw(st.booleans()) or key in ("wsrep_on",):
            result[key] = draw(strategy)
        elif draw(st.booleans()):
            continue
        else:
            result[key] = SYNCED[key]
    return result


@given(any_facts())
def test_healthy_only_when_every_condition_holds(node_facts: dict[str, str]) -> None:
    found = classify(node_facts)
    state, detail = found.state, found.detail
    usable = (
        node_facts.get("wsrep_on", "").upper() in ("ON", "1")
        and node_facts.get("wsrep_connected", "").upper() in ("ON", "1")
        and node_facts.get("wsrep_cluster_status") == "Primary"
        and node_facts.get("wsrep_local_state") == "4"
        and node_facts.get("wsrep_ready", "").upper() in ("ON", "1")
        and node_facts.get("wsrep_desync", "?").upper() in ("OFF", "0", "")
        and node_facts.get("wsrep_reject_queries", "?").upper() == "NONE"
        and node_facts.get("read_only", "?").upper() in ("OFF", "0", "")
    )
    assert (state == "synced") == usable
    assert (detail == "") == (state == "synced")


def step(
    observation: Snapshot | ProbeError,
    previous: Verdict | None,
    now: float,
    policy: Policy | None = None,
) -> Verdict:
    return evaluate(observation, policy or Policy(), previous, "n1", now, 1000.0 + now, 0.01)


HEALTHY = Snapshot(
    SYNCED, provider_options="evs.suspect_timeout = PT3S; evs.inactive_timeout = PT6S"
)
TIMEOUT = ProbeError("timeout", "no answer to the status query within 2 s", timed_out=True)
REFUSED = ProbeError("unreachable", "Can't connect to MySQL server on '127.0.0.1:3306' (111)")


def test_first_healthy_poll_is_healthy_at_once() -> None:
    verdict = step(HEALTHY, None, 0.0)
    assert verdict.healthy and verdict.state == "synced" and verdict.fault is None


def test_hold_down_after_timeout_walks_recovering_then_synced() -> None:
    v = step(HEALTHY, None, 0.0)
    v = step(TIMEOUT, v, 1.0)
    assert (v.healthy, v.state, v.fault, v.hold_down_pending) == (False, "timeout", "node", True)
    v = step(HEALTHY, v, 5.0)  # thawed: looks synced, but may still be evicted
    assert (v.healthy, v.state) == (False, "recovering")
    assert "hold-down" in v.detail and v.hold_down_seconds == 6.0  # 2 x PT3S
    v = step(HEALTHY, v, 10.9)
    assert v.state == "recovering"
    v = step(HEALTHY, v, 11.0)  # 6 s of continuous health
    assert (v.healthy, v.state, v.hold_down_pending) == (True, "synced", False)
    v = step(HEALTHY, v, 9.0)
    assert v.healthy


def test_eviction_seen_ends_the_hold_down() -> None:
    # Measured: a thawed node looks synced, then non-Primary once it notices the eviction, then
    # rejoins. Once it has shown non-Primary its next Primary claim is current.
    v = step(TIMEOUT, step(HEALTHY, None, 0.0), 1.0)
    v = step(HEALTHY, v, 2.0)
    assert v.state == "recovering"
    v = step(Snapshot(dict(SYNCED, wsrep_cluster_status="non-Primary")), v, 6.0)
    assert v.state == "non_primary" and not v.hold_down_pending
    v = step(
        Snapshot(dict(SYNCED, wsrep_local_state="1", wsrep_local_state_comment="Joining")), v, 7.0
    )
    assert v.state == "joining"
    assert step(HEALTHY, v, 7.5).healthy


def test_other_bad_states_keep_the_hold_down_clock_reset() -> None:
    v = step(TIMEOUT, step(HEALTHY, None, 0.0), 1.0)
    v = step(HEALTHY, v, 2.0)
    v = step(Snapshot(dict(SYNCED, wsrep_ready="OFF")), v, 3.0)
    assert v.state == "not_ready" and v.hold_down_pending
    v = step(HEALTHY, v, 10.0)
    assert v.state == "recovering"  # the clock started again at 10.0
    v = step(HEALTHY, v, 15.9)
    assert v.state == "recovering"
    assert step(HEALTHY, v, 16.0).healthy


def test_refused_does_not_start_a_hold_down() -> None:
    v = step(REFUSED, step(HEALTHY, None, 0.0), 1.0)
    assert v.state == "unreachable" and not v.hold_down_pending
    assert step(HEALTHY, v, 2.0).healthy


def test_configured_hold_down_wins_and_zero_disables() -> None:
    v = step(TIMEOUT, None, 0.0, Policy(hold_down=0.0))
    assert step(HEALTHY, v, 1.0, Policy(hold_down=0.0)).healthy
    assert hold_down_for(Policy(hold_down=12.0), HEALTHY.provider_options) == 12.0
    assert hold_down_for(Policy(), None) == 10.0  # Galera's default PT5S, doubled
    assert hold_down_for(Policy(), "evs.suspect_timeout = PT1M30S") == 180.0
    assert hold_down_for(Policy(), "evs.suspect_timeout = PT1S") == 3.0  # at least + 2 s


def test_agent_errors_are_marked_as_the_agents_fault() -> None:
    v = step(ProbeError("access_denied", "the agent's login was refused"), None, 0.0)
    assert (v.healthy, v.state, v.fault) == (False, "access_denied", "agent")
    v = step(ProbeError("too_many_connections", "Too many connections"), None, 0.0)
    assert v.fault == "agent"


def test_since_moves_only_on_a_change_of_state() -> None:
    v1 = step(HEALTHY, None, 0.0)
    v2 = step(HEALTHY, v1, 1.0)
    assert v2.since == v1.since
    v3 = step(REFUSED, v2, 2.0)
    assert v3.since == v3.checked_at


def test_reason_is_state_and_detail() -> None:
    v = step(Snapshot(dict(SYNCED, wsrep_cluster_status="non-Primary")), None, 0.0)
    assert v.reason == "non_primary (wsrep_cluster_status=non-Primary)"
    assert step(HEALTHY, None, 0.0).reason == "synced"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT3S", 3.0), ("PT1.5S", 1.5), ("PT1M30S", 90.0), ("P1D", 86400.0), ("PT1H", 3600.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "3S", "soon", "PT-1S"])
def test_parse_duration_rejects(text: str) -> None:
    assert parse_duration(text) is None


def test_provider_option_lookup() -> None:
    options = "base_port = 4567; evs.suspect_timeout = PT5S; gmcast.isolate = 0"
    assert provider_option(options, "evs.suspect_timeout") == "PT5S"
    assert provider_option(options, "evs.inactive_timeout") is None


DONOR = {"wsrep_local_state": "2", "wsrep_local_state_comment": "Donor/Desynced"}


@pytest.mark.parametrize(
    ("changes", "policy", "state", "usable"),
    [
        (DONOR, Policy(), "donor", False),
        (DONOR, Policy(available_when_donor=True), "donor", True),
        (
            {**DONOR, "wsrep_sst_donor_rejects_queries": "ON"},
            Policy(available_when_donor=True),
            "donor",
            False,
        ),
        # a manual desync reports the same state 2: never kept as a donor
        ({**DONOR, "wsrep_desync": "ON"}, Policy(available_when_donor=True), "desynced", False),
        ({"read_only": "ON"}, Policy(available_when_readonly=True), "read_only", True),
        ({"read_only": "ON"}, Policy(available_when_donor=True), "read_only", False),
        ({**DONOR, "read_only": "ON"}, Policy(available_when_donor=True), "read_only", False),
        (
            {**DONOR, "read_only": "ON"},
            Policy(available_when_donor=True, available_when_readonly=True),
            "donor",
            True,
        ),
        ({"wsrep_local_recv_queue": "17"}, Policy(max_recv_queue=16), "lagging", False),
        ({"wsrep_local_recv_queue": "16"}, Policy(max_recv_queue=16), "synced", True),
        ({"wsrep_local_recv_queue": None}, Policy(max_recv_queue=16), "lagging", False),
        ({"wsrep_cluster_size": "2"}, Policy(min_cluster_size=3), "cluster_too_small", False),
        ({"wsrep_cluster_size": "3"}, Policy(min_cluster_size=3), "synced", True),
        ({"wsrep_on": "OFF"}, Policy(), "not_galera", False),
        ({"wsrep_on": "OFF"}, Policy(allow_standalone=True), "standalone", True),
        ({"wsrep_on": "OFF", "read_only": "ON"}, Policy(allow_standalone=True), "read_only", False),
        # options never rescue a split or a disconnected node
        (
            {"wsrep_cluster_status": "non-Primary"},
            Policy(available_when_donor=True),
            "non_primary",
            False,
        ),
    ],
)
def test_policy_options(
    changes: dict[str, str | None], policy: Policy, state: str, usable: bool
) -> None:
    found = classify(facts(**changes), policy)
    assert (found.state, found.usable) == (state, usable), found


def run(policy: Policy, observations: list[Snapshot | ProbeError]) -> list[tuple[bool, str]]:
    verdict: Verdict | None = None
    out = []
    for index, observation in enumerate(observations):
        verdict = step(observation, verdict, float(index), policy)
        out.append((verdict.healthy, verdict.state))
    return out


LAGGING = Snapshot(dict(SYNCED, wsrep_local_recv_queue="500"))
SPLIT = Snapshot(dict(SYNCED, wsrep_cluster_status="non-Primary"))
DENIED = ProbeError("access_denied", "the agent's login was refused")


def test_fall_debounces_soft_failures_only() -> None:
    policy = Policy(fall=3, max_recv_queue=10)
    assert run(policy, [HEALTHY, LAGGING, LAGGING, LAGGING, HEALTHY]) == [
        (True, "synced"),
        (True, "synced"),
        (True, "synced"),
        (False, "lagging"),
        (True, "synced"),
    ]
    # a hard fact turns 503 at once, whatever fall says
    assert run(policy, [HEALTHY, SPLIT]) == [(True, "synced"), (False, "non_primary")]
    assert run(policy, [HEALTHY, REFUSED]) == [(True, "synced"), (False, "unreachable")]
    # the streak must be consecutive
    assert all(h for h, _ in run(policy, [HEALTHY, LAGGING, LAGGING, HEALTHY, LAGGING, LAGGING]))


def test_fall_for_timeouts_and_agent_errors_set_apart() -> None:
    policy = Policy(fall=1, fall_timeout=2, fall_agent_error=4)
    assert run(policy, [HEALTHY, TIMEOUT, TIMEOUT]) == [
        (True, "synced"),
        (True, "synced"),
        (False, "timeout"),
    ]
    healthy_flags = [h for h, _ in run(policy, [HEALTHY, DENIED, DENIED, DENIED, DENIED])]
    assert healthy_flags == [True, True, True, True, False]
    assert run(Policy(fall=2), [HEALTHY, TIMEOUT, HEALTHY]) == [(True, "synced")] * 3


def test_debounced_verdict_says_what_is_coming() -> None:
    v = step(HEALTHY, None, 0.0, Policy(fall_timeout=3))
    v = step(TIMEOUT, v, 1.0, Policy(fall_timeout=3))
    assert v.healthy and v.state == "synced" and v.fault is None
    assert v.detail.startswith("timeout (no answer") and "bad poll 1 of 3 before fall" in v.detail
    assert not v.hold_down_pending or v.healthy  # a node kept in service needs no hold-down


def test_rise_needs_consecutive_good_polls() -> None:
    policy = Policy(rise=3)
    assert run(policy, [SPLIT, HEALTHY, HEALTHY, HEALTHY, SPLIT, HEALTHY]) == [
        (False, "non_primary"),
        (False, "recovering"),
        (False, "recovering"),
        (True, "synced"),
        (False, "non_primary"),
        (False, "recovering"),
    ]


@given(
    st.lists(
        st.sampled_from([HEALTHY, LAGGING, SPLIT, TIMEOUT, REFUSED, DENIED]),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, 4),
    st.integers(1, 4),
)
def test_never_healthy_on_a_hard_fact_and_never_fewer_than_rise(
    observations: list[Snapshot | ProbeError], rise: int, fall: int
) -> None:
    policy = Policy(rise=rise, fall=fall, max_recv_queue=10, hold_down=0.0)
    verdict: Verdict | None = None
    good_run = 0
    for index, observation in enumerate(observations):
        was_healthy = verdict is not None and verdict.healthy
        verdict = step(observation, verdict, float(index), policy)
        good_run = good_run + 1 if observation is HEALTHY else 0
        if observation in (SPLIT, REFUSED):
            assert not verdict.healthy
        if verdict.healthy and not was_healthy:
            assert good_run >= rise
