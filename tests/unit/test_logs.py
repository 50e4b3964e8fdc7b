"""Log format (text/json), the transition line's fields, the repeat limit, log_format config."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from galera_health.config import ConfigError, load_settings
from galera_health.logs import JsonFormatter, RepeatFilter, setup_logging
from galera_health.poller import NodePoller
from galera_health.store import VerdictStore
from galera_health.verdict import Observation, Policy, ProbeError, Snapshot

from ..samples import SYNCED


class FakeProbe:
    def __init__(self, *observations: Observation) -> None:
        self.observations = list(observations)

    def poll(self) -> Observation:
        return self.observations.pop(0)


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_transitions_as_json_fields(restore_root: None) -> None:
    stream = io.StringIO()
    setup_logging("info", "json", stream)
    store = VerdictStore(["n1"], max_age=5.0)
    probe = FakeProbe(
        Snapshot(SYNCED),
        Snapshot(SYNCED),
        Snapshot(dict(SYNCED, wsrep_cluster_status="non-Primary")),
    )
    poller = NodePoller("n1", probe, Policy(), store)  # type: ignore[arg-type]
    for _ in range(3):
        poller.run_once()
    first, second = json_lines(stream)  # the second synced poll is not a transition
    assert first["level"] == "info" and first["logger"] == "galera_health"
    assert (first["node"], first["from"], first["to"]) == ("n1", "starting", "synced")
    assert second["level"] == "warning"
    assert (second["from"], second["to"]) == ("synced", "non_primary")
    assert second["reason"] == "non_primary (wsrep_cluster_status=non-Primary)"
    assert second["message"] == "n1: synced -> non_primary (wsrep_cluster_status=non-Primary)"
    assert str(first["time"]).endswith("+00:00")
    counts = poller.stats.counts()
    assert counts.polls == 3 and counts.transitions == {
        ("starting", "synced"): 1,
        ("synced", "non_primary"): 1,
    }


def test_text_format_keeps_the_human_line(restore_root: None) -> None:
    stream = io.StringIO()
    setup_logging("info", "text", stream)
    store = VerdictStore(["n1"], max_age=5.0)
    poller = NodePoller("n1", FakeProbe(ProbeError("unreachable", "refused")), Policy(), store)  # type: ignore[arg-type]
    poller.run_once()
    line = stream.getvalue().strip()
    assert line.endswith("WARNING galera_health: n1: starting -> unreachable (refused)")
    assert poller.stats.counts().errors == {"unreachable": 1}


def test_repeated_identical_errors_are_held_back() -> None:
    now = [0.0]
    limiter = RepeatFilter(window=60.0, clock=lambda: now[0])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(limiter)
    log = logging.getLogger("galera_health.test_repeat")
    log.propagate = False
    log.addHandler(handler)
    try:
        for _ in range(5):
            log.error("%s: poller stuck (%s)", "n1", "x", extra={"node": "n1"})
            now[0] += 1
        log.error("%s: poller stuck (%s)", "n2", "x", extra={"node": "n2"})  # another node
        for _ in range(3):  # transitions are never held back
            log.warning("n1: a -> b", extra={"transition": True, "node": "n1"})
        now[0] += 60
        log.error("%s: poller stuck (%s)", "n1", "x", extra={"node": "n1"})
    finally:
        log.removeHandler(handler)
    lines = json_lines(stream)
    assert [line["message"] for line in lines] == [
        "n1: poller stuck (x)",
        "n2: poller stuck (x)",
        "n1: a -> b",
        "n1: a -> b",
        "n1: a -> b",
        "n1: poller stuck (x) (4 identical lines suppressed in 60 s)",
    ]
    assert lines[-1]["suppressed"] == 4


def test_log_format_setting() -> None:
    base = {"nodes": ["127.0.0.1:3306"], "user": "u"}
    assert load_settings(base, {}).log_format == "text"
    assert load_settings(base, {"GALERA_HEALTH_LOG_FORMAT": "JSON"}).log_format == "json"
    assert (
        load_settings(
            {**base, "log_format": "text"}, {"GALERA_HEALTH_LOG_FORMAT": "json"}
        ).log_format
        == "text"
    )
    with pytest.raises(ConfigError, match="log_format must be one of text, json"):
        load_settings({**base, "log_format": "xml"}, {})


def test_log_format_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('user = "u"\nlog_format = "json"\n[nodes]\nn1 = "127.0.0.1:3306"\n')
    assert load_settings({}, {}, config_path=str(path)).log_format == "json"
