"""What a release names: one version everywhere, and only artifacts that exist.

The package version (pyproject.toml), the chart's `version` and `appVersion` and the Dockerfile's
image label move together: an agent image tagged with an old appVersion and pulled IfNotPresent
would run an old agent that exits 2 on the config keys a newer chart renders. No doc may name an
artifact nobody publishes (a package index entry, a registry image): the way in is a checkout, a
wheel built from it, and an image built from the Dockerfile.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from .helm import CHART, REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# Every file an operator reads to install or deploy the agent.
OPERATOR_FILES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "Dockerfile",
    *sorted(p for p in (REPO / "deploy").rglob("*") if p.is_file()),
    CHART / "values.yaml",
    CHART / "Chart.yaml",
    *sorted((CHART / "templates").glob("*")),
]
# Installing from a package index (pip install galera_health[==...], with or without --upgrade)
# and pulling from a registry nobody pushes to.
UNPUBLISHED = [
    re.compile(r"pip3? install (--upgrade |-U )?galera[-_]health\b(?![-\w]*\.whl)"),
    re.compile(r"ghcr\.io/galera-health"),
    re.compile(r"docker\.io/galera-health"),
]


def package_version() -> str:
    version: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return version


def test_package_chart_and_image_versions_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = package_version()
    assert chart["version"] == version, "bump helm/galera-health/Chart.yaml version with pyproject"
    assert chart["appVersion"] == version, "appVersion is the agent image's tag"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(rf"^ARG VERSION={re.escape(version)}$", dockerfile, re.MULTILINE)
    for tag in re.findall(r"galera-health:(\d+\.\d+\.\d+)", dockerfile):
        assert tag == version


def test_docs_name_the_current_version_only() -> None:
    version = package_version()
    for path in OPERATOR_FILES:
        text = path.read_text()
        for tag in re.findall(r"galera-health:(\d+\.\d+\.\d+)", text):
            assert tag == version, f"{path.relative_to(REPO)} names image tag {tag}"
        for chart_version in re.findall(r'"(?:Version|AppVersion)" "(\d+\.\d+\.\d+)"', text):
            assert chart_version == version, f"{path.relative_to(REPO)}: {chart_version}"


def test_no_doc_names_an_unpublished_artifact() -> None:
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in OPERATOR_FILES
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(p.search(line) for p in UNPUBLISHED)
    ]
    assert not found, "\n".join(found)


def test_the_ways_in_are_documented() -> None:
    """The artifacts that do exist: a wheel built from a checkout, an image built from the
    Dockerfile and pushed by the operator, whose repository the chart's image names."""
    unit = (REPO / "deploy" / "systemd" / "galera-health.service").read_text()
    assert re.search(r"pip wheel .*-w dist \.", unit) or "python3 -m build" in unit
    assert "pip install ./galera_health-*.whl" in unit
    kubernetes = (REPO / "docs" / "kubernetes.md").read_text()
    assert "docker build -t myregistry.azurecr.io/galera-health:" in kubernetes
    assert "docker push myregistry.azurecr.io/galera-health:" in kubernetes
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert "/" not in values["image"]["repository"], "the default is the local build's name"
    assert "push it to a registry" in (CHART / "values.yaml").read_text()


def test_operator_files_exist() -> None:
    assert all(Path(p).is_file() for p in OPERATOR_FILES)
