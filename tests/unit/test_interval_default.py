"""The default poll interval (0.25 s, for a cache lag under 0.45 s: docs/benchmarks.md) and the
defaults that are derived from it still mean what the README says."""

from __future__ import annotations

import itertools

from mysql.connector import errors as myerrors

from galera_health.config import DEFAULT_INTERVAL, Credentials, NodeAddress, Timeouts, load_settings
from galera_health.probe import NodeProbe, ProbeError

from .conftest import Clock
from .fakes import StubDriver


def test_default_interval_and_what_derives_from_it() -> None:
    settings = load_settings({"nodes": ["n1=127.0.0.1:3306"], "user": "health"}, {})
    assert settings.interval == DEFAULT_INTERVAL == 0.25
    # max_age: three missed polls plus one poll's worst case (connect + read)
    assert settings.max_age == 3 * 0.25 + 2 + 2 == 4.75
    # a healthy verdict vouches until the next poll must have answered, + 0.5 s
    assert settings.healthy_max_age == 0.25 + 2 + 0.5 == 2.75
    # rise/fall count polls: 1/1 by default, so their meaning does not depend on the interval
    assert (settings.policy.rise, settings.policy.fall) == (1, 1)


def test_backoff_keeps_its_pace_at_a_short_interval() -> None:
    """access_denied backs off 2, 4, 8, 16, 30 s whatever the interval: a short interval must
    not turn into more refused logins."""
    driver = StubDriver()
    clock = Clock(0.0)
    driver.refuse = myerrors.ProgrammingError(errno=1045, msg="Access denied for user 'health'")
    probe = NodeProbe(
        NodeAddress("n1", "127.0.0.1", 3306),
        Credentials(user="health"),
        Timeouts(),
        interval=DEFAULT_INTERVAL,
        backoff_max=30.0,
        connector=driver,
        clock=clock,
    )
    attempts: list[float] = []
    for tick in range(800):  # 200 s of polls every 0.25 s
        clock.now = tick * DEFAULT_INTERVAL
        error = probe.poll()
        assert isinstance(error, ProbeError) and error.kind == "access_denied"
        if "next try" not in error.detail:
            attempts.append(clock.now)
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert gaps[:5] == [2.0, 4.0, 8.0, 16.0, 30.0], attempts
    assert 6 <= len(attempts) <= 12, attempts
