"""A real Kubernetes control plane on loopback for the tests: etcd (Debian etcd-server),
kube-apiserver and kube-controller-manager (scripts/install-kube.sh builds them), no kubelet.

The kubelet's part is played through the API itself: a Node, pods created with `nodeName`, and
their status subresource patched to Running, a podIP and Ready=True. The controller manager runs
only its EndpointSlice controller, which fills a Service's EndpointSlice from its selector, as
in a real cluster. Every process is stopped by PID; the state lives in a temporary directory.

Identities (a token file): `admin` (system:masters) for the tests and the controller manager,
one token per agent, users of the group `galera-health-agents`, which a RoleBinding binds to a
namespaced Role that may get, list and patch pods (the chart's Role), and `stranger`, bound to
nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import urllib3

from galera_health.testbed import free_ports
from testkit.agent import terminate

__all__ = ["AGENT_GROUP", "ROLE_RULES", "STRANGER", "KubeError", "KubeTestbed", "missing_kube"]

KUBE_BIN_DIRS = (os.path.expanduser("~/go/bin"),)
AGENT_GROUP = "galera-health-agents"
NAMESPACE = "galera"
STRANGER = "stranger"
# The chart's Role (tests/chart checks the two are the same)
ROLE_RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]}]


class KubeError(Exception):
    """The control plane did not start or an API call failed; the text says which."""


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    gopath = os.environ.get("GOPATH")
    dirs = [os.path.join(gopath, "bin")] if gopath else []
    for folder in [*dirs, *KUBE_BIN_DIRS]:
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_kube() -> str | None:
    """Why the Kubernetes tests cannot run here, or None."""
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "openssl"):
        if find_binary(name) is None:
            where = "scripts/setup.sh --test" if name in ("etcd", "openssl") else (
                "scripts/install-kube.sh"
            )
            return f"{name} not found (install it with {where})"
    return None


class Process:
    """One control-plane process, its output in a log file of the state directory."""

    def __init__(self, name: str, command: Sequence[str], log: Path) -> None:
        self.name = name
        self.log = log
        self.handle = log.open("wb")
        self.process = subprocess.Popen(
            list(command),
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds (by PID only)."""
        terminate(self.process, grace)
        self.handle.close()


class KubeTestbed:
    """etcd + kube-apiserver + kube-controller-manager on free loopback ports."""

    def __init__(self, agents: Iterable[str] = ("n1", "n2", "n3")) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="galera-health-kube-"))
        self.etcd_port, self.peer_port, self.api_port = free_ports(3)
        self.namespace = NAMESPACE
        self.admin_token = os.urandom(16).hex()
        self.agent_tokens = {name: os.urandom(16).hex() for name in agents}
        # a valid identity with no binding: what a pod without the chart's Role calls with
        self.agent_tokens[STRANGER] = os.urandom(16).hex()
        self.etcd: Process | None = None
        self.apiserver: Process | None = None
        self.controllers: Process | None = None
        self._pool: urllib3.HTTPSConnectionPool | None = None

    # --- paths an agent is pointed at ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca_file(self) -> str:
        """The API server's self-signed serving certificate (written to --cert-dir), with its CA."""
        return str(self.dir / "certs" / "apiserver.crt")

    def token_file(self, agent: str) -> str:
        path = self.dir / f"token-{agent}"
        if not path.exists():
            path.write_text(self.agent_tokens[agent] + "\n")
            path.chmod(0o600)
        return str(path)

    # --- start and stop -----------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        problem = missing_kube()
        if problem is not None:
            raise KubeError(problem)
        self._write_files()
        self.start_etcd()
        self.start_apiserver(timeout)
        self._bootstrap()
        self._start_controllers()

    def _write_files(self) -> None:
        (self.dir / "certs").mkdir()
        rows = [f"{self.admin_token},admin,admin,system:masters"]
        rows += [
            f"{token},agent-{name},agent-{name},{AGENT_GROUP}"
            for name, token in self.agent_tokens.items()
            if name != STRANGER
        ]
        rows.append(f"{self.agent_tokens[STRANGER]},{STRANGER},{STRANGER}")
        tokens = self.dir / "tokens.csv"
        tokens.write_text("\n".join(rows) + "\n")
        tokens.chmod(0o600)
        key = self.dir / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(self.dir / "sa.pub")],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "t", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": "admin", "user": {"token": self.admin_token}}],
            "contexts": [{"name": "t", "context": {"cluster": "t", "user": "admin"}}],
            "current-context": "t",
        }
        path = self.dir / "kubeconfig"
        path.write_text(json.dumps(kubeconfig))
        path.chmod(0o600)

    def start_etcd(self) -> None:
        etcd = find_binary("etcd")
        assert etcd is not None
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.etcd = Process(
            "etcd",
            [
                etcd, "--name", "t", "--data-dir", str(self.dir / "etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"t={peer}", "--log-level", "warn",
            ],
            self.dir / "etcd.log",
        )  # fmt: skip

    def start_apiserver(self, timeout: float = 120.0) -> None:
        """Start (or restart, keeping etcd's data) the API server; returns once it is ready."""
        binary = find_binary("kube-apiserver")
        assert binary is not None
        self.apiserver = Process(
            "kube-apiserver",
            [
                binary,
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.dir / 'certs'}",
                f"--token-auth-file={self.dir / 'tokens.csv'}",
                "--authorization-mode=RBAC", "--anonymous-auth=false",
                f"--service-account-key-file={self.dir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.dir / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--enable-priority-and-fairness=false", "--profiling=false",
                "--v=0",
            ],
            self.dir / "kube-apiserver.log",
        )  # fmt: skip
        self._pool = None
        deadline = time.monotonic() + timeout
        while True:
            if not self.apiserver.running():
                raise KubeError(f"kube-apiserver exited\n{self.tails()}")
            with contextlib.suppress(KubeError, urllib3.exceptions.HTTPError):
                status, _ = self.call("GET", "/readyz", timeout=2.0)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise KubeError(f"kube-apiserver not ready within {timeout:g} s\n{self.tails()}")
            time.sleep(0.25)

    def stop_apiserver(self) -> None:
        if self.apiserver is not None:
            self.apiserver.stop()
        self._pool = None

    def _start_controllers(self) -> None:
        binary = find_binary("kube-controller-manager")
        assert binary is not None
        self.controllers = Process(
            "kube-controller-manager",
            [
                binary,
                f"--kubeconfig={self.dir / 'kubeconfig'}",
                "--controllers=endpointslice", "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1", "--secure-port=0", "--profiling=false",
            ],
            self.dir / "kube-controller-manager.log",
        )  # fmt: skip

    def stop(self) -> None:
        for process in (self.controllers, self.apiserver, self.etcd):
            if process is not None:
                process.stop()
        if self._pool is not None:
            self._pool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tails(self) -> str:
        processes = (self.etcd, self.apiserver, self.controllers)
        return "\n".join(p.tail() for p in processes if p is not None)

    # --- the API, as admin ----------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, Any]]:
        if self._pool is None:
            # the tests' own client, checking the server against its self-signed CA too
            self._pool = urllib3.HTTPSConnectionPool(
                "127.0.0.1", self.api_port, ca_certs=self.ca_file, cert_reqs="CERT_REQUIRED",
                retries=False, maxsize=4,
            )  # fmt: skip
        response = self._pool.request(
            method,
            path,
            body=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.admin_token}",
                "Content-Type": content_type,
                "Accept": "application/json",
            },
            timeout=urllib3.Timeout(total=timeout),
        )
        try:
            document = json.loads(response.data) if response.data else {}
        except ValueError:
            document = {"text": response.data.decode(errors="replace")}
        return response.status, document

    def must(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        status, document = self.call(method, path, body, **kwargs)
        if status >= 300:
            raise KubeError(f"{method} {path}: {status} {document.get('message', document)}")
        return document

    def _bootstrap(self) -> None:
        """The namespace, its default ServiceAccount (pods need one), the agents' Role."""
        ns = self.namespace
        self.must("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        self.must(
            "POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "default"}}
        )
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
        self.must("POST", f"{rbac}/roles", {"metadata": {"name": "pod-label"}, "rules": ROLE_RULES})
        self.must(
            "POST",
            f"{rbac}/rolebindings",
            {
                "metadata": {"name": "pod-label"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "pod-label",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": AGENT_GROUP}
                ],
            },
        )

    # --- what the kubelet and the chart would do ------------------------------------------------

    def create_node(self, name: str = "node-1") -> None:
        status, document = self.call("POST", "/api/v1/nodes", {"metadata": {"name": name}})
        if status >= 300 and status != 409:  # 409: made by an earlier test module
            raise KubeError(f"POST node {name}: {status} {document.get('message', document)}")

    def create_ready_pod(
        self, name: str, labels: Mapping[str, str], ip: str, node: str = "node-1"
    ) -> None:
        """A pod bound to `node`, then Running and Ready with `ip`, as a kubelet would report."""
        ns = self.namespace
        self.must(
            "POST",
            f"/api/v1/namespaces/{ns}/pods",
            {
                "metadata": {"name": name, "labels": dict(labels)},
                "spec": {
                    "nodeName": node,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {"name": "mariadb", "image": "mariadb", "ports": [{"containerPort": 3306}]}
                    ],
                },
            },
        )
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ready = {"type": "Ready", "status": "True", "lastTransitionTime": now}
        self.must(
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/{name}/status",
            {
                "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "podIPs": [{"ip": ip}],
                    "conditions": [ready],
                }
            },
            content_type="application/merge-patch+json",
        )

    def create_service(self, name: str, selector: Mapping[str, str], port: int = 3306) -> None:
        self.must(
            "POST",
            f"/api/v1/namespaces/{self.namespace}/services",
            {
                "metadata": {"name": name},
                "spec": {
                    "selector": dict(selector),
                    "ports": [{"name": "mysql", "port": port, "targetPort": port}],
                },
            },
        )

    def pod_labels(self, name: str) -> dict[str, str]:
        document = self.must("GET", f"/api/v1/namespaces/{self.namespace}/pods/{name}")
        labels: dict[str, str] = document["metadata"].get("labels") or {}
        return labels

    def endpoint_pods(self, service: str, timeout: float = 5.0) -> set[str]:
        """The pods that the Service's EndpointSlices hold as ready endpoints."""
        selector = f"kubernetes.io/service-name={service}"
        document = self.must(
            "GET",
            f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices"
            f"?labelSelector={selector}",
            timeout=timeout,
        )
        pods: set[str] = set()
        for item in document.get("items", []):
            for endpoint in item.get("endpoints") or []:
                ref = endpoint.get("targetRef") or {}
                ready = (endpoint.get("conditions") or {}).get("ready", True)
                if ref.get("kind") == "Pod" and ready:
                    pods.add(ref["name"])
        return pods
