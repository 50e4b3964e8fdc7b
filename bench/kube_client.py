"""What a Kubernetes client costs the agent (kubernetes_pod_label): import time and memory.

Why: the labeler needs two API calls (patch a pod's label, list pods by label). The choice is
between the official `kubernetes` client and urllib3 (galera_health.kube_api); the agent is a
sidecar whose footprint is measured (docs/benchmarks.md), so the client must earn its cost.

Each figure is taken in a fresh interpreter that has first loaded what a serving agent loads
(cli, web, poller, waitress): the RSS before and after importing the client and building a
client object for one API server (no connection made), and the import + build time. Median of
--runs runs. The official client is measured only when installed (pip install -e '.[bench]').

Usage: python bench/kube_client.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

AGENT = "import galera_health.cli, galera_health.web, galera_health.poller, waitress.server"

RSS = """
def rss_kib():
    with open('/proc/self/status') as handle:
        for line in handle:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
"""

CANDIDATES = {
    "urllib3 (galera_health.kube_api)": """
from galera_health.kube_api import PodApi, PodTarget
api = PodApi(PodTarget('10.0.0.1', 443, '/dev/null', CA, 'galera', 'galera-0'))
""",
    "kubernetes (official client)": """
from kubernetes import client
configuration = client.Configuration()
configuration.host = 'https://10.0.0.1:443'
configuration.ssl_ca_cert = CA
api = client.CoreV1Api(client.ApiClient(configuration))
""",
}

CA = "/etc/ssl/certs/ca-certificates.crt"


def one_run(code: str) -> dict[str, float]:
    program = f"""
import json, time
{RSS}
{AGENT}
CA = {CA!r}
before = rss_kib()
started = time.perf_counter()
{code}
took = time.perf_counter() - started
print(json.dumps({{"ms": took * 1000, "before": before, "after": rss_kib()}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1])
    figures: dict[str, float] = json.loads(result.stdout)
    return figures


def installed(module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"{'client':34} {'import+build ms':>16} {'agent RSS MiB':>14} {'added MiB':>10}")
    for name, code in CANDIDATES.items():
        if name.startswith("kubernetes") and not installed("kubernetes"):
            print(f"{name:34} not installed (pip install -e '.[bench]')")
            continue
        runs = [one_run(code) for _ in range(args.runs)]
        took = statistics.median(r["ms"] for r in runs)
        base = statistics.median(r["before"] for r in runs) / 1024
        added = statistics.median(r["after"] - r["before"] for r in runs) / 1024
        print(f"{name:34} {took:16.0f} {base + added:14.1f} {added:10.1f}")


if __name__ == "__main__":
    main()
