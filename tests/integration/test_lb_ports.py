"""The VM recipe Azure accepts: the LB's write and read-off-the-writer rules use their own backend
ports (3307, 3308) and deploy/nftables/galera-health-lb-ports.nft redirects them to MariaDB's 3306.

Tested in two network namespaces this test creates, joined by a veth pair: "vm" (the shipped
rule file loaded with nft, and a socat listener on 3306 that hands each connection to a test-bed
node's unix socket, standing in for a MariaDB bound to the VM's address) and "client" (the LB's
side: connects to the VM's address on 3307 and 3308 with the mariadb client). Nothing is added
to the machine's own namespace.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from galera_health.testbed import GaleraTestbed

pytestmark = pytest.mark.galera

RULES = Path(__file__).resolve().parents[2] / "deploy" / "nftables" / "galera-health-lb-ports.nft"
VM_ADDRESS = "192.168.213.2"
CLIENT_ADDRESS = "192.168.213.1"


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)


def must(*args: str) -> str:
    result = run(*args)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr.strip()}"
    return result.stdout


@dataclass
class Namespaces:
    vm: str
    client: str
    forwarder: subprocess.Popen[bytes]


@pytest.fixture
def namespaces(cluster: GaleraTestbed) -> Iterator[Namespaces]:
    missing = [tool for tool in ("ip", "nft", "socat", "mariadb") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        message = f"the LB port test needs root and {', '.join(missing) or 'nothing more'}"
        if os.environ.get("GALERA_TESTS_REQUIRE_GALERA") == "1" or os.environ.get("CI"):
            pytest.fail(message + "; run ./scripts/test (setup.sh --test installs them)")
        pytest.skip(message)
    tag = secrets.token_hex(3)
    vm, client = f"gh-vm-{tag}", f"gh-client-{tag}"
    forwarder: subprocess.Popen[bytes] | None = None
    try:
        must("ip", "netns", "add", vm)
        must("ip", "netns", "add", client)
        must("ip", "link", "add", f"ghv{tag}", "netns", vm, "type", "veth",
             "peer", "name", f"ghc{tag}", "netns", client)  # fmt: skip
        for namespace, link, address in ((vm, f"ghv{tag}", VM_ADDRESS),
                                          (client, f"ghc{tag}", CLIENT_ADDRESS)):  # fmt: skip
            must("ip", "-n", namespace, "addr", "add", f"{address}/30", "dev", link)
            must("ip", "-n", namespace, "link", "set", link, "up")
            must("ip", "-n", namespace, "link", "set", "lo", "up")
        forwarder = subprocess.Popen(
            ["ip", "netns", "exec", vm, "socat",
             f"TCP-LISTEN:3306,bind={VM_ADDRESS},fork,reuseaddr",
             f"UNIX-CONNECT:{cluster.node('n1').socket}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        yield Namespaces(vm, client, forwarder)
    finally:
        if forwarder is not None:
            forwarder.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                forwarder.wait(timeout=10)
            if forwarder.poll() is None:
                forwarder.kill()
                forwarder.wait(timeout=10)
        for namespace in (client, vm):
            run("ip", "netns", "del", namespace)  # takes its end of the veth pair with it


def query(ns: Namespaces, cluster: GaleraTestbed, port: int) -> subprocess.CompletedProcess[str]:
    password = Path(cluster.password_file).read_text().strip()
    return run(
        "ip", "netns", "exec", ns.client, "mariadb", "--protocol=TCP",
        f"--host={VM_ADDRESS}", f"--port={port}", f"--user={cluster.monitor_user}",
        f"--password={password}", "--connect-timeout=3", "--skip-ssl",
        "--batch", "--skip-column-names",
        "-e", "SELECT @@wsrep_node_name, @@port",
    )  # fmt: skip


def test_rule_file_sends_3307_and_3308_to_mariadb_3306(
    namespaces: Namespaces, cluster: GaleraTestbed
) -> None:
    deadline = time.monotonic() + 20
    while query(namespaces, cluster, 3306).returncode != 0:  # the forwarder listens
        assert time.monotonic() < deadline, query(namespaces, cluster, 3306).stderr
        time.sleep(0.2)
    # without the rules, the LB's backend ports 3307/3308 reach nothing on the VM
    assert query(namespaces, cluster, 3307).returncode != 0
    for _ in range(2):  # loading it again replaces the table: safe to re-run
        must("ip", "netns", "exec", namespaces.vm, "nft", "-f", str(RULES))
    tables = must("ip", "netns", "exec", namespaces.vm, "nft", "list", "tables")
    assert tables.split().count("galera_health_lb") == 1, tables
    for port in (3307, 3308, 3306):
        answer = query(namespaces, cluster, port)
        assert answer.returncode == 0, (port, answer.stderr)
        assert answer.stdout.split() == ["n1", str(cluster.node("n1").port)], answer.stdout
    assert query(namespaces, cluster, 3309).returncode != 0  # only the two ports
