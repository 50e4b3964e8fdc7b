"""The probe's connection lifecycle and error naming, with a stub at the driver boundary.

The real driver against real servers (silent, blackholed, frozen, stalled) is exercised in
tests/integration; here we pin the rules: one connection, discarded after any error, backoff only
where retrying hurts the server.
"""

from __future__ import annotations

import ssl

from mysql.connector import errors as myerrors

from galera_health.config import Credentials, NodeAddress, Timeouts
from galera_health.probe import NodeProbe
from galera_health.session import classify_error
from galera_health.verdict import ProbeError, Snapshot

from .conftest import Clock
from .fakes import StubDriver


def make_probe(driver: StubDriver, clock: Clock | None = None) -> NodeProbe:
    return NodeProbe(
        NodeAddress("n1", "127.0.0.1", 3306),
        Credentials(user="health"),
        Timeouts(connect=2, read=2, write=2, statement=1.0),
        interval=1.0,
        backoff_max=30.0,
        connector=driver,
        clock=clock or Clock(0.0),
    )


def test_one_connection_reused_with_every_deadline_set() -> None:
    driver = StubDriver()
    probe = make_probe(driver)
    for _ in range(3):
        observation = probe.poll()
        assert isinstance(observation, Snapshot)
    assert len(driver.connections) == 1
    assert observation.facts == {"wsrep_cluster_status": "Primary", "wsrep_on": "ON"}
    assert observation.provider_options == "evs.suspect_timeout = PT3S"
    args = driver.arguments
    assert (args["connection_timeout"], args["read_timeout"], args["write_timeout"]) == (2, 2, 2)
    assert args["use_pure"] is True
    setup = driver.connections[0].statements[0]
    assert "wsrep_sync_wait = 0" in setup and "max_statement_time = 1" in setup


def test_connection_discarded_after_a_timeout_and_after_empty_rows() -> None:
    driver = StubDriver()
    probe = make_probe(driver)
    probe.poll()
    driver.connections[0].fail_next = myerrors.ReadTimeoutError()
    error = probe.poll()
    assert isinstance(error, ProbeError) and error.kind == "timeout" and error.timed_out
    assert driver.connections[0].closed
    assert isinstance(probe.poll(), Snapshot)
    assert len(driver.connections) == 2
    driver.connections[1].rows = []  # a poisoned connection answers [] without raising
    error = probe.poll()
    assert isinstance(error, ProbeError) and driver.connections[1].closed
    assert isinstance(probe.poll(), Snapshot) and len(driver.connections) == 3


def test_refused_is_retried_every_poll() -> None:
    driver = StubDriver()
    driver.refuse = myerrors.InterfaceError(errno=2003, msg="Can't connect to MySQL server")
    probe = make_probe(driver)
    for _ in range(3):
        error = probe.poll()
        assert isinstance(error, ProbeError) and error.kind == "unreachable"
    driver.refuse = None
    assert isinstance(probe.poll(), Snapshot)


def test_access_denied_backs_off_capped() -> None:
    driver = StubDriver()
    clock = Clock(0.0)
    driver.refuse = myerrors.ProgrammingError(errno=1045, msg="Access denied for user 'health'")
    probe = make_probe(driver, clock)
    attempts = 0
    for tick in range(200):
        clock.now = float(tick)
        error = probe.poll()
        assert isinstance(error, ProbeError) and error.kind == "access_denied"
        assert error.agent_fault
        if "next try" not in error.detail:
            attempts += 1
    # 2, 4, 8, 16, 30, 30, ... seconds apart: about 10 attempts in 200 s, not 200
    assert 6 <= attempts <= 12
    driver.refuse = None
    clock.now = 1000.0
    assert isinstance(probe.poll(), Snapshot)


def test_the_lease_client_backs_off_by_the_same_session_rule() -> None:
    """The lease's connection is a session too: refused logins back off as the probe's do,
    named for the writer account, and a wait costs no login."""
    from galera_health.config import load_settings
    from galera_health.lease import Failure
    from galera_health.lease_sql import LeaseClient

    settings = load_settings({"nodes": ["n1=h1"], "user": "health", "writer": "true"}, {})
    driver, clock = StubDriver(), Clock(0.0)
    driver.refuse = myerrors.ProgrammingError(errno=1045, msg="Access denied for user 'health'")
    client = LeaseClient(settings.node(settings.nodes[0]), connector=driver, clock=clock)
    attempts = 0
    for tick in range(200):
        clock.now = float(tick)
        found = client.connect()
        assert isinstance(found, Failure) and found.kind == "access_denied"
        assert "the writer account 'health' was refused" in found.detail
        attempts += "retrying later" not in found.detail
    assert 6 <= attempts <= 12  # 2, 4, 8, 16, 30, 30, ... seconds apart, as the probe's
    assert driver.arguments["read_timeout"] == 1 and driver.arguments["user"] == "health"


def test_error_names() -> None:
    t = Timeouts()
    cases: list[tuple[BaseException, bool, str]] = [
        (myerrors.ConnectionTimeoutError(errno=2003), True, "timeout"),
        (myerrors.WriteTimeoutError(), False, "timeout"),
        (
            myerrors.DatabaseError(errno=1040, msg="Too many connections"),
            True,
            "too_many_connections",
        ),
        (myerrors.DatabaseError(errno=1226, msg="User has exceeded"), True, "too_many_connections"),
        (
            myerrors.NotSupportedError(
                msg="Authentication plugin 'client_ed25519' is not supported"
            ),
            True,
            "auth_plugin_unsupported",
        ),
        (myerrors.DatabaseError(errno=1969, msg="max_statement_time exceeded"), False, "timeout"),
        (
            myerrors.ProgrammingError(errno=1193, msg="Unknown system variable"),
            True,
            "unsupported_server",
        ),
        (myerrors.OperationalError(errno=2013, msg="Lost connection"), False, "unreachable"),
        (
            myerrors.DatabaseError(errno=1047, msg="WSREP has not yet prepared node"),
            False,
            "not_ready",
        ),
        (ConnectionResetError(104, "Connection reset by peer"), False, "unreachable"),
        (ValueError("odd"), False, "error"),
    ]
    for exc, connecting, kind in cases:
        assert classify_error(exc, t, connecting).kind == kind, exc


def wrapped(outer: Exception, inner: BaseException) -> Exception:
    outer.__cause__ = inner
    return outer


def test_wrapped_tls_failures_and_handshake_timeouts_are_named() -> None:
    t = Timeouts()
    lost = "Lost connection to MySQL server at '127.0.0.1:3306', system error: "
    verify = wrapped(
        myerrors.InterfaceError(errno=2055, msg=lost + "Errno 1: [SSL: CERTIFICATE_VERIFY_FAILED]"),
        ssl.SSLCertVerificationError("certificate verify failed"),
    )
    error = classify_error(verify, t, connecting=True)
    assert (error.kind, error.agent_fault) == ("tls_error", True)
    stalled = wrapped(
        myerrors.InterfaceError(errno=2055, msg=lost + "The handshake operation timed out"),
        TimeoutError("_ssl.c:989: The handshake operation timed out"),
    )
    error = classify_error(stalled, t, connecting=True)
    assert (error.kind, error.timed_out) == ("timeout", True)
    assert "while connecting within 2 s" in error.detail
    plain = myerrors.InterfaceError(errno=2055, msg=lost + "Connection reset by peer")
    assert classify_error(plain, t, connecting=False).kind == "unreachable"
