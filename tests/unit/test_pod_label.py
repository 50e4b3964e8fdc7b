"""kubernetes_pod_label: the pure decision (pod_label.py), its settings and the in-cluster
environment it reads. The calls themselves run against a real kube-apiserver (tests/kube)."""

from __future__ import annotations

from pathlib import Path

import pytest

from galera_health import pod_label
from galera_health.config import ConfigError, load_settings
from galera_health.kube_api import pod_target
from galera_health.pod_label import STANDBY, WRITER, PodLabelState

BASE = {"nodes": ["n1=127.0.0.1:3306"], "user": "u"}


def state(wanted: str, applied: str | None) -> PodLabelState:
    return PodLabelState("galera-0", "db", "galera-health/role", wanted, applied)


def test_a_standby_writes_only_its_own_label_and_never_sweeps() -> None:
    todo = pod_label.plan(state(STANDBY, WRITER), now=10, own_due=100, sweep_due=0)
    assert todo == pod_label.Plan(sweep=False, own=True)
    # in step: nothing until the refresh is due, and still no sweep then
    assert pod_label.plan(state(STANDBY, STANDBY), 10, 100, 0) == pod_label.Plan(False, False)
    assert pod_label.plan(state(STANDBY, STANDBY), 100, 100, 0) == pod_label.Plan(False, True)


def test_a_new_holder_sweeps_the_others_then_labels_itself() -> None:
    todo = pod_label.plan(state(WRITER, STANDBY), now=10, own_due=100, sweep_due=100)
    assert todo == pod_label.Plan(sweep=True, own=True)
    # in step: the sweep again every SWEEP_SECONDS (a pod an agent killed -9 left labelled)
    assert pod_label.plan(state(WRITER, WRITER), 10, 100, 10) == pod_label.Plan(True, False)
    assert pod_label.plan(state(WRITER, WRITER), 10, 100, 11) == pod_label.Plan(False, False)


def test_after_a_failure_the_same_wish_waits_but_a_lost_role_does_not() -> None:
    failing = state(WRITER, None)
    assert pod_label.plan(failing, 10, 0, 0, retry_at=11, failed_for=WRITER) == pod_label.Plan(
        False, False
    )
    assert pod_label.plan(failing, 11, 0, 0, retry_at=11, failed_for=WRITER).own
    lost = state(STANDBY, None)
    assert pod_label.plan(lost, 10, 50, 0, retry_at=11, failed_for=WRITER).own


def test_in_step_and_since_when_it_is_not() -> None:
    s = state(STANDBY, STANDBY)
    assert s.in_step and s.out_of_step_since is None
    s = pod_label.track(s, WRITER, now=5.0)
    assert not s.in_step and s.out_of_step_since == 5.0
    s = pod_label.track(s, WRITER, now=6.0)
    assert s.out_of_step_since == 5.0  # counted from the first moment, not the last look
    s = pod_label.failed(s, "cannot reach the API server", now=7.0, own=True)
    assert (s.applied, s.error, s.api_errors, s.out_of_step_since) == (
        None,
        "cannot reach the API server",
        1,
        5.0,
    )
    s = pod_label.applied(s, WRITER, now=8.0)
    assert s.in_step and s.out_of_step_since is None and s.error is None and s.api_errors == 1
    s = pod_label.swept(s, 2)
    assert s.cleared == 2


def test_wanted_follows_the_writer_answer_only() -> None:
    assert pod_label.wanted(True) == WRITER and pod_label.wanted(False) == STANDBY


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"kubernetes_pod_label": "role"}, "needs writer = true"),
        (
            {"kubernetes_pod_label": "role", "writer": "true", "nodes": ["a=h:1", "b=h:2"]},
            "exactly one node",
        ),
        ({"kubernetes_pod_label": "bad key!", "writer": "true"}, "not a Kubernetes label key"),
        ({"kubernetes_pod_label": "-role", "writer": "true"}, "not a Kubernetes label key"),
        ({"kubernetes_pod_label": "Example.com/role", "writer": "true"}, "not a Kubernetes"),
        (
            {"kubernetes_pod_label": "role", "writer": "true", "kubernetes_api_url": "http://x"},
            "must be an https:// URL",
        ),
    ],
)
def test_settings_that_cannot_work_are_one_line(flags: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({**BASE, **flags}, {})
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_valid_key_and_the_default_off() -> None:
    assert load_settings(dict(BASE), {}).kubernetes_pod_label == ""
    for key in ("role", "galera-health/role", "example.com/galera.role_1"):
        settings = load_settings({**BASE, "kubernetes_pod_label": key, "writer": "true"}, {})
        assert settings.kubernetes_pod_label == key


def pod_settings(tmp_path: Path, **extra: str) -> object:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("t\n")
    ca.write_text("-")
    flags = {
        **BASE,
        "writer": "true",
        "kubernetes_pod_label": "galera-health/role",
        "kubernetes_token_file": str(token),
        "kubernetes_ca_file": str(ca),
        **extra,
    }
    return load_settings(flags, {})


def test_the_in_cluster_environment(tmp_path: Path) -> None:
    settings = pod_settings(tmp_path)
    env = {
        "POD_NAME": "galera-1",
        "POD_NAMESPACE": "db",
        "KUBERNETES_SERVICE_HOST": "fd00::1",
        "KUBERNETES_SERVICE_PORT": "6443",
    }
    target = pod_target(settings, env)  # type: ignore[arg-type]
    assert (target.pod, target.namespace, target.host, target.port) == (
        "galera-1",
        "db",
        "fd00::1",
        6443,
    )
    assert target.url == "https://[fd00::1]:6443"
    # kubernetes_api_url wins over the service environment (tests point agents at their server)
    settings = pod_settings(tmp_path, kubernetes_api_url="https://127.0.0.1:7000")
    target = pod_target(settings, env)  # type: ignore[arg-type]
    assert (target.host, target.port) == ("127.0.0.1", 7000)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "POD_NAME"),
        ({"POD_NAME": "g-0"}, "POD_NAMESPACE"),
        ({"POD_NAME": "g-0", "POD_NAMESPACE": "db"}, "KUBERNETES_SERVICE_HOST"),
    ],
)
def test_a_missing_piece_of_the_environment_is_one_line(
    tmp_path: Path, env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as error:
        pod_target(pod_settings(tmp_path), env)  # type: ignore[arg-type]
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_an_unreadable_token_file_is_named(tmp_path: Path) -> None:
    settings = pod_settings(tmp_path, kubernetes_token_file=str(tmp_path / "missing"))
    env = {"POD_NAME": "g-0", "POD_NAMESPACE": "db", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    with pytest.raises(ConfigError) as error:
        pod_target(settings, env)  # type: ignore[arg-type]
    assert "kubernetes_token_file" in str(error.value)
