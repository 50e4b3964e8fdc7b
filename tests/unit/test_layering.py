"""Data flows one way, poller -> store -> HTTP: the HTTP side never loads the MySQL side.

Each check imports a module in a fresh interpreter (this one has long since loaded everything)
and looks at what came with it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def modules_loaded_by(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(result.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "galera_health.web",
        "galera_health.metrics",
        "galera_health.status_page",
        "galera_health.agent_check",
        "galera_health.store",
        "galera_health.stats",
        "galera_health.facts",
        "galera_health.recovery",
    ],
)
def test_the_http_side_never_loads_the_mysql_driver(module: str) -> None:
    loaded = modules_loaded_by(module)
    assert module in loaded  # the check itself ran
    assert not {m for m in loaded if m == "mysql" or m.startswith("mysql.")}
    assert not {"galera_health.probe", "galera_health.session"} & loaded
    assert "galera_health.poller" not in loaded
    # nor the Kubernetes side: the pod labeler's calls never run on an HTTP thread
    assert not {"galera_health.kube_api", "galera_health.pod_labeler", "urllib3"} & loaded


def test_the_poller_side_never_loads_the_web_side() -> None:
    loaded = modules_loaded_by("galera_health.poller")
    assert "galera_health.probe" in loaded and "mysql.connector" in loaded
    assert not {"galera_health.web", "galera_health.metrics", "flask"} & loaded
