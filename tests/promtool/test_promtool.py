"""docs/prometheus-alerts.yml through the real promtool (Debian package prometheus):
`promtool check rules`, and `promtool test rules` on tests/promtool/alerts_test.yml, where every
alert fires in a case (a frozen, split or maintained node, or another fault) and stays quiet on
the healthy cluster. tests/integration/test_alert_series.py checks that the test's series are
the ones the real agent exports."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[1] / "docs" / "prometheus-alerts.yml"
RULE_TESTS = HERE / "alerts_test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "the alert rule tests need promtool (Debian package prometheus): ./scripts/test"
        if os.environ.get("CI") or os.environ.get("GALERA_TESTS_REQUIRE_GALERA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def alert_names() -> list[str]:
    document: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return [rule["alert"] for group in document["groups"] for rule in group["rules"]]


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=HERE, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules(promtool: str) -> None:
    done = run(promtool, "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout, done.stdout


def test_every_alert_has_a_case_that_fires_and_stays_quiet_when_healthy() -> None:
    document: dict[str, Any] = yaml.safe_load(RULE_TESTS.read_text())
    assert document["rule_files"] == ["../../docs/prometheus-alerts.yml"]
    fires: set[str] = set()
    quiet_when_healthy: set[str] = set()
    for group in document["tests"]:
        for case in group["alert_rule_test"]:
            if case["exp_alerts"]:
                fires.add(case["alertname"])
            elif group["name"] == "healthy cluster":
                quiet_when_healthy.add(case["alertname"])
    alerts = set(alert_names())
    assert len(alerts) == len(alert_names())  # no alert name twice
    assert alerts - fires == set(), "alerts no case makes fire"
    assert alerts - quiet_when_healthy == set(), "alerts not checked quiet on a healthy cluster"
    assert fires | quiet_when_healthy <= alerts, "cases of alerts the rules do not have"


def test_promtool_test_rules(promtool: str) -> None:
    done = run(promtool, "test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout
