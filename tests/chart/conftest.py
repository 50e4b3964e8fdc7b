"""A real helm v3 for the chart tests (scripts/install-helm.sh installs one)."""

from __future__ import annotations

import pytest

from .helm import Helm, helm_or_skip


@pytest.fixture(scope="session")
def helm() -> Helm:
    return helm_or_skip()
