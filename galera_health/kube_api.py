"""The Kubernetes API, as far as the role on the pod needs it: patch one label of a pod, list
the pods carrying a label. With the pod's own service account, found the in-cluster way.

urllib3 rather than the official `kubernetes` client: two calls need a TLS connection pool with
deadlines, not a generated client of the whole API, which cost the agent 2 s of import and 42 MiB
against urllib3's 66 ms and 0.9 MiB (bench/kube_client.py; docs/architecture.md, "The role on
the pod").
Every call has a deadline; nothing here is ever called from a poll or an HTTP thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import urllib3

from .config import ConfigError, Settings

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 2.0


@dataclass(frozen=True)
class PodTarget:
    """Where the agent's own pod is and how to reach the API server as its service account."""

    host: str
    port: int
    token_file: str
    ca_file: str
    namespace: str
    pod: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


def pod_target(settings: Settings, env: Mapping[str, str]) -> PodTarget:
    """The in-cluster configuration: POD_NAME and POD_NAMESPACE from the downward API (the
    namespace also from the service account's namespace file), the API server from
    KUBERNETES_SERVICE_HOST/PORT unless kubernetes_api_url says otherwise. One ConfigError line
    names what is missing and how to give it."""
    pod = env.get("POD_NAME", "")
    if not pod:
        raise ConfigError(
            "kubernetes_pod_label needs the pod's name in POD_NAME; set it from the downward "
            "API (env valueFrom fieldRef metadata.name; the chart does)"
        )
    namespace = env.get("POD_NAMESPACE", "")
    if not namespace:
        try:
            with open(os.path.join(SERVICE_ACCOUNT_DIR, "namespace"), encoding="utf-8") as f:
                namespace = f.read().strip()
        except OSError:
            namespace = ""
    if not namespace:
        raise ConfigError(
            "kubernetes_pod_label needs the pod's namespace in POD_NAMESPACE; set it from the "
            "downward API (fieldRef metadata.namespace; the chart does)"
        )
    url = settings.kubernetes_api_url
    if url is None:
        host = env.get("KUBERNETES_SERVICE_HOST", "")
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ConfigError(
                "kubernetes_pod_label: no KUBERNETES_SERVICE_HOST (not in a pod?); set "
                "kubernetes_api_url to the API server's https URL"
            )
        url = f"https://{f'[{host}]' if ':' in host else host}:{port}"
    parts = urlsplit(url)
    try:
        port_number = parts.port or 443
    except ValueError:
        raise ConfigError(f"kubernetes API URL {url!r} has an invalid port") from None
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"kubernetes API URL {url!r} must be https://HOST[:PORT]")
    for key, path in (
        ("kubernetes_token_file", settings.kubernetes_token_file),
        ("kubernetes_ca_file", settings.kubernetes_ca_file),
    ):
        if not os.access(path, os.R_OK):
            raise ConfigError(
                f"cannot read {key} {path!r}; mount the pod's service account token "
                "(automountServiceAccountToken) or set the path"
            )
    return PodTarget(
        host=parts.hostname,
        port=port_number,
        token_file=settings.kubernetes_token_file,
        ca_file=settings.kubernetes_ca_file,
        namespace=namespace,
        pod=pod,
    )


class ApiError(Exception):
    """One failed call: `kind` a stable word (unreachable, timeout, unauthorized, forbidden,
    not_found, error), the text one safe line (never the token)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class PodApi:
    """Two calls over one pooled TLS connection, each bounded by CONNECT + READ_TIMEOUT."""

    def __init__(self, target: PodTarget) -> None:
        self.target = target
        self._pool = urllib3.HTTPSConnectionPool(
            target.host,
            target.port,
            ca_certs=target.ca_file,
            cert_reqs="CERT_REQUIRED",
            retries=False,
            maxsize=1,
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
        )

    def _token(self) -> str:
        """Re-read at every call: the kubelet rotates a projected token in place."""
        try:
            with open(self.target.token_file, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ApiError(
                "error", f"cannot read the token file {self.target.token_file}: {exc.strerror}"
            ) from None

    def _call(
        self, method: str, path: str, body: dict[str, object] | None = None
    ) -> dict[str, object]:
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/merge-patch+json"
        try:
            response = self._pool.request(
                method,
                path,
                body=None if body is None else json.dumps(body).encode(),
                headers=headers,
            )
        except urllib3.exceptions.TimeoutError:
            raise ApiError(
                "timeout", f"the API server {self.target.url} did not answer in time"
            ) from None
        except urllib3.exceptions.SSLError as exc:
            raise ApiError(
                "error",
                f"TLS to {self.target.url} failed ({_short(exc)}); check kubernetes_ca_file",
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise ApiError(
                "unreachable", f"cannot reach the API server {self.target.url}: {_short(exc)}"
            ) from None
        status = response.status
        if status == 401:
            raise ApiError(
                "unauthorized",
                "the API server rejected the service account token "
                f"({self.target.token_file}); check the token is mounted and current",
            )
        if status == 403:
            raise ApiError(
                "forbidden",
                f"the pod's service account may not {method} pods in {self.target.namespace}; "
                "bind it to a Role with get, list and patch on pods (the chart renders one)",
            )
        if status == 404:
            raise ApiError(
                "not_found",
                f"pod {self.target.pod} not found in namespace {self.target.namespace}; check "
                "POD_NAME and POD_NAMESPACE (the downward API)",
            )
        if status >= 300:
            raise ApiError("error", f"{method} of a pod: HTTP {status} from {self.target.url}")
        try:
            document = json.loads(response.data)
        except ValueError:
            raise ApiError("error", f"{method} of a pod: not JSON from {self.target.url}") from None
        return document if isinstance(document, dict) else {}

    def _pods(self) -> str:
        return f"/api/v1/namespaces/{quote(self.target.namespace, safe='')}/pods"

    def set_label(self, pod: str, key: str, value: str) -> None:
        """A JSON merge patch of the one label: nothing else of the pod is touched."""
        self._call(
            "PATCH",
            f"{self._pods()}/{quote(pod, safe='')}",
            {"metadata": {"labels": {key: value}}},
        )

    def pods_with(self, key: str, value: str) -> list[str]:
        """The names of the namespace's pods whose label `key` is `value`."""
        selector = quote(f"{key}={value}", safe="")
        document = self._call("GET", f"{self._pods()}?labelSelector={selector}")
        items = document.get("items")
        names: list[str] = []
        for item in items if isinstance(items, list) else []:
            metadata = item.get("metadata") if isinstance(item, dict) else None
            if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
                names.append(metadata["name"])
        return names

    def close(self) -> None:
        self._pool.close()


def _short(exc: Exception) -> str:
    """urllib3's reason, without the pool's repr around it."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    if ": " in text and text.startswith("<"):
        text = text.split(": ", 1)[1]
    return text.splitlines()[0][:200] if text else type(exc).__name__
