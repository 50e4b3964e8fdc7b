"""A real helm v3 for the chart tests (scripts/install-helm.sh installs one)."""

from __future__ import annotations

import os

import pytest

from .helm import Helm, find_helm


@pytest.fixture(scope="session")
def helm() -> Helm:
    binary = find_helm()
    if binary is None:
        message = "chart tests need helm v3; run scripts/install-helm.sh (go install, ~3.5 min)"
        if os.environ.get("CI") or os.environ.get("GALERA_TESTS_REQUIRE_HELM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return Helm(binary)
