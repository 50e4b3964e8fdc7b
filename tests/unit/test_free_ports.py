"""The test bed's ports lie outside the kernel's ephemeral range and are free when chosen."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from galera_health import testbed
from galera_health.testbed import LISTEN_PORTS_FROM, ephemeral_range, free_ports


def test_ports_are_distinct_free_and_outside_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
        assert (low, high) == tuple(int(part) for part in handle.read().split())
    ports = free_ports(40)
    assert len(set(ports)) == 40
    for port in ports:
        assert LISTEN_PORTS_FROM <= port < 65536, port
        assert not low <= port <= high, (port, low, high)
        with socket.socket() as sock:  # still free a moment later (nothing else here binds it)
            sock.bind(("127.0.0.1", port))


def test_the_range_is_read_at_run_time_and_ports_in_use_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ephemeral range leaving only 65521-65535: with most of those held by listeners,
    free_ports returns exactly the others, and says so when it cannot find enough."""
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("1024\t65520\n")
    monkeypatch.setattr(testbed, "_EPHEMERAL_RANGE_FILE", str(range_file))
    assert testbed.ephemeral_range() == (1024, 65520)
    pool = set(range(65521, 65536))
    held: list[socket.socket] = []
    try:
        for port in sorted(pool)[:-3]:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()  # in use already: taken either way
                continue
            sock.listen(1)
            held.append(sock)
        free = pool - {int(sock.getsockname()[1]) for sock in held} - set(sorted(pool)[:-3])
        free = {port for port in free if _bindable(port)}
        assert set(testbed.free_ports(len(free))) == free
        with pytest.raises(testbed.TestbedError, match="outside the ephemeral range"):
            testbed.free_ports(len(free) + 1)
    finally:
        for sock in held:
            sock.close()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
