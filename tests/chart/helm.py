"""Finding and running a real `helm` v3 binary; rendering the chart into Python objects.

Shared by tests/chart and tests/integration/test_chart_contract.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "galera-health"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
# helm's default for `template` would be its build's client-go version; pin what we validate.
KUBE_VERSION = "1.37.0"
RELEASE = "db"
NAMESPACE = "galera"


def helm_candidates() -> list[str]:
    found: list[str] = []
    on_path = shutil.which("helm")
    if on_path:
        found.append(on_path)
    found.append(str(Path.home() / "go" / "bin" / "helm"))
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None
    )
    if go:
        try:
            gopath = subprocess.run(
                [go, "env", "GOPATH"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            gopath = ""
        if gopath:
            found.append(str(Path(gopath.split(os.pathsep)[0]) / "bin" / "helm"))
    return found


def find_helm() -> str | None:
    """The first helm v3 among PATH, ~/go/bin and $(go env GOPATH)/bin."""
    for candidate in helm_candidates():
        if not os.access(candidate, os.X_OK):
            continue
        try:
            version = subprocess.run(
                [candidate, "version", "--short"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if version.startswith("v3."):
            return candidate
    return None


def helm_or_skip() -> Helm:
    """A Helm for the tests; without one a skip locally, a failure under CI (or
    GALERA_TESTS_REQUIRE_HELM=1): scripts/install-helm.sh installs it there."""
    import pytest

    binary = find_helm()
    if binary is None:
        message = "chart tests need helm v3; run scripts/install-helm.sh (go install, ~3.5 min)"
        if os.environ.get("CI") or os.environ.get("GALERA_TESTS_REQUIRE_HELM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return Helm(binary)


@dataclass(frozen=True)
class Rendered:
    objects: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        matches = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
        return matches[0]

    def agent_toml(self) -> str:
        config = self.one("ConfigMap", f"{RELEASE}-galera-health-config")
        text: str = config["data"]["agent.toml"]
        return text

    def agent_config(self) -> dict[str, Any]:
        return tomllib.loads(self.agent_toml())


class Helm:
    def __init__(self, binary: str) -> None:
        self.binary = binary

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    @staticmethod
    def value_args(values: Sequence[Path | str] = (), sets: Sequence[str] = ()) -> list[str]:
        args: list[str] = []
        for path in values:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        return args

    def template(
        self,
        values: Sequence[Path | str] = (),
        sets: Sequence[str] = (),
        chart: Path = CHART,
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "template",
            RELEASE,
            str(chart),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
            *self.value_args(values, sets),
        )

    def render(
        self, values: Sequence[Path | str] = (), sets: Sequence[str] = (), chart: Path = CHART
    ) -> Rendered:
        result = self.template(values, sets, chart)
        assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
        objects = [o for o in yaml.safe_load_all(result.stdout) if o]
        return Rendered(objects)

    def failure(self, values: Sequence[Path | str] = (), sets: Sequence[str] = ()) -> str:
        """helm template must fail; returns its error output."""
        result = self.template(values, sets)
        assert result.returncode != 0, f"helm template accepted bad values: {sets}"
        return result.stderr
