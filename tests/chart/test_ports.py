"""One port, one job, in every doc: 9200 the probes, the agent-check port, the status port.

An operator who follows two docs must not end up with two listeners on one port ("address in
use"): every mention of the status port (status_listen, agent.status.port, a /status URL) names
the chart's default, every mention of HAProxy's agent-check port names one other number, and the
Azure NSG rules cover both.
"""

from __future__ import annotations

import re

import yaml

from galera_health.config import DEFAULTS

from .helm import CHART, REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), CHART / "values.yaml"]
STATUS_PATTERNS = [
    re.compile(r"status_listen\s*=\s*\"[^\"]*:(\d+)\""),
    re.compile(r"status_listen.*?`[\w.]*:(\d+)`"),
    re.compile(r"agent\.status\.port[=:` ]+(\d+)"),
    re.compile(r"\bport\s*:\s*(\d+)\s*#.*status", re.IGNORECASE),
    re.compile(r"(?:https?://)?[\w.<>-]+:(\d+)/(?:status|metrics)\b"),
    re.compile(r"\b(\d{4}):\1\b.*status", re.IGNORECASE),
    re.compile(r"gh-status, containerPort: (\d+)"),
]
AGENT_CHECK_PATTERNS = [
    re.compile(r"agent_check_listen\s*=\s*\"[^\"]*:(\d+)\""),
    re.compile(r"agent-port (\d+)"),
]


def mentions(patterns: list[re.Pattern[str]]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for pattern in patterns:
                for match in pattern.finditer(line):
                    where = f"{path.relative_to(REPO)}:{number}"
                    found.setdefault(where, set()).add(int(match.group(1)))
    return found


def chart_status_port() -> int:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    port = values["agent"]["status"]["port"]
    assert isinstance(port, int), "by default /status and /metrics have a port of their own"
    return port


def agent_check_port() -> int:
    ports = {p for found in mentions(AGENT_CHECK_PATTERNS).values() for p in found}
    assert len(ports) == 1, f"docs name several agent-check ports: {sorted(ports)}"
    return ports.pop()


def test_the_three_ports_are_distinct() -> None:
    probe = DEFAULTS.listen.port
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["agent"]["port"] == probe
    assert len({probe, chart_status_port(), agent_check_port()}) == 3


def test_every_doc_names_the_status_port_of_the_chart() -> None:
    status = chart_status_port()
    found = mentions(STATUS_PATTERNS)
    assert len(found) >= 5, found  # the patterns do find the docs' mentions
    wrong = {where: ports for where, ports in found.items() if ports != {status}}
    assert not wrong, f"status port is {status} (agent.status.port) but: {wrong}"


def test_every_doc_names_one_agent_check_port() -> None:
    found = mentions(AGENT_CHECK_PATTERNS)
    assert len(found) >= 3, found
    assert agent_check_port() != chart_status_port()


def test_the_nsg_rules_cover_every_agent_port() -> None:
    azure = (REPO / "docs" / "azure-load-balancer.md").read_text()
    ports = [DEFAULTS.listen.port, agent_check_port(), chart_status_port()]
    deny_row = next(line for line in azure.splitlines() if line.startswith("| 4000 |"))
    deny_cli = next(
        line
        for line in azure.splitlines()
        if "deny" not in line
        and "--source-address-prefixes VirtualNetwork --destination-port-ranges" in line
    )
    deny_bicep = next(line for line in azure.splitlines() if "destinationPortRanges" in line)
    for port in ports:
        assert f"{port}" in deny_row and f" {port}" in deny_cli and f"'{port}'" in deny_bicep
    rows = [line for line in azure.splitlines() if re.match(r"\| 1\d\d \|", line)]
    for port in ports:
        assert any(f"TCP {port} " in row for row in rows), f"no NSG allow row for {port}"
