"""How the suite splits over pytest-xdist's workers (scripts/test runs `-n 2 --dist loadgroup`).

Most of the suite's wall time is waiting on real faults in the one shared Galera test bed, on
one worker; unit, chart and the modules that start a cluster of their own run beside it on the
other. Every test of the shared bed (it asks for the session's `cluster` fixture) goes to one
worker, in file order, so there is still one test bed per run; every other module stays whole on
one worker, so a module-scoped fixture (a cluster of its own, a rendered chart) is built once.
"""

from __future__ import annotations

import pytest

BED = "galera-test-bed"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        shared_bed = "cluster" in getattr(item, "fixturenames", ())
        group = BED if shared_bed else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
