"""HTTP: Flask routes that only read the store, and the tuned waitress server that serves them.

No handler opens, uses or waits for a database socket, or for a lock held across I/O.
Contract: 200 only when usable, 503 otherwise, always a short text reason, Content-Length and
Cache-Control: no-store.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Literal

from flask import Flask, Response, jsonify, request
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from werkzeug.exceptions import MethodNotAllowed

from . import __version__
from .facts import DRIVER_MODE
from .metrics import make_registry
from .pod_label import PodLabelState
from .recovery import NodeReport, forced
from .recovery import node_document as recovery_node_document
from .sessions import KillReport
from .stats import PollStats
from .status_page import StatusPage
from .store import NodeView, VerdictStore, WriterView
from .verdict import Fault, Policy, State

Liveness = Callable[[], tuple[bool, str]]

# Answered with the verdict, never need the status token, and take OPTIONS: `/` is one because
# a load balancer left at its default probes it (Azure's path, HAProxy's bare `option httpchk`).
PROBE_PATHS = frozenset({"/health", "/readyz", "/livez", "/", "/writer", "/reader"})
PROBE_METHODS = ("GET", "HEAD", "OPTIONS")
PROBE_ALLOW = ", ".join(PROBE_METHODS)

# waitress defaults let 150 idle connections delay a probe by minutes (connection_limit 100,
# no cleanup); these answered in ~10 ms with 150 idle or slowloris connections
# (docs/architecture.md, "waitress, tuned").
SERVER_SETTINGS: dict[str, Any] = {
    "threads": 4,
    "connection_limit": 1000,
    "channel_timeout": 10,
    "cleanup_interval": 2,
    "backlog": 1024,
    "asyncore_use_poll": True,  # select() breaks past 1024 descriptors
    "max_request_header_size": 8192,
    "max_request_body_size": 65536,
    "expose_tracebacks": False,
    "ident": "galera-health",
}


class NoStoreResponse(Response):
    """Every answer, errors included, says no-store: set once at construction instead of by an
    after_request hook that costs every probe a dispatch (the probe path is Flask-bound)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers["Cache-Control"] = "no-store"


def text(body: str, status: int) -> Response:
    return NoStoreResponse(body + "\n", status=status, mimetype="text/plain")


def node_line(view: NodeView) -> str:
    return f"{view.node}: {view.reason}"


def verdict_answer(views: list[NodeView]) -> tuple[int, str]:
    """200 only when every node in `views` is usable; the body names the ones that are not."""
    bad = [v for v in views if not v.healthy]
    if bad:
        return 503, "; ".join(node_line(v) for v in bad)
    return 200, "; ".join(node_line(v) for v in views)


def probe_answer(store: VerdictStore, liveness: Liveness, path: str) -> tuple[int, str] | None:
    """Status and body for a probe path; None for any other path (an unknown node included).
    The fast path answers from here and the Flask routes from the same verdict_answer and
    liveness_answer, so their bodies cannot differ (tests/unit/test_fast_path.py checks all).
    `/` is the same probe as `/health` (a browser asking for HTML gets the page instead of the
    text, with the same status: see wants_html)."""
    if path in ("/health", "/readyz", "/"):
        return verdict_answer(store.views())
    if path.startswith("/health/") and path[8:] in store.nodes:
        return verdict_answer([store.view(path[8:])])
    if path == "/livez":
        return liveness_answer(liveness)
    if path == "/writer":
        return writer_answer(store)
    if path.startswith("/writer/") and path[8:] in store.nodes:
        return writer_node_answer(store.writer_view(path[8:]))
    if path == "/reader":
        return reader_answer(store)
    if path.startswith("/reader/") and path[8:] in store.nodes:
        return reader_node_answer(store, path[8:])
    return None


def writer_node_answer(view: WriterView) -> tuple[int, str]:
    return (200 if view.writer else 503), f"{view.node}: {view.reason}"


def writer_answer(store: VerdictStore) -> tuple[int, str]:
    """/writer: the answer for the agent's node. An agent watching several nodes answers 503
    here (naming the writer): a write rule must ask /writer/<node>, or every backend probing
    this one agent would get the same 200 and writes would spread again."""
    views = store.writer_views()
    if len(views) == 1:
        return writer_node_answer(views[0])
    writers = [v.node for v in views if v.writer]
    return 503, (
        f"this agent watches {len(views)} nodes: ask /writer/<node> "
        f"(writer here: {', '.join(writers) or 'none'})"
    )


def reader_node_answer(store: VerdictStore, node: str) -> tuple[int, str]:
    """/reader for a node: 200 when it is usable (/health 200) and not the writer (/writer 503),
    for a read rule that keeps reads off the write node (Patroni's /replica). 503 `writer` on
    the holder even when it is the only usable node: an agent knows its own node only, so the
    fallback of reads to the writer belongs to the load balancer (docs/haproxy.md)."""
    if not store.writer_enabled:
        return 503, f"{node}: reader needs the writer election (start the agent with --writer)"
    now = store.clock()
    health = store.view(node, now)
    if not health.healthy:
        return 503, f"{node}: {health.reason}"
    role = store.writer_view(node, now)
    if role.writer:
        return 503, f"{node}: {role.reason}; reads go to the other nodes"
    return 200, f"{node}: reader; {role.reason}"


def reader_answer(store: VerdictStore) -> tuple[int, str]:
    """/reader: the answer for the agent's node; like /writer, an agent watching several nodes
    answers 503 here (a read rule must ask /reader/<node>)."""
    nodes = store.nodes
    if len(nodes) == 1:
        return reader_node_answer(store, nodes[0])
    return 503, f"this agent watches {len(nodes)} nodes: ask /reader/<node>"


def liveness_answer(liveness: Liveness) -> tuple[int, str]:
    alive, reason = liveness()
    return (200 if alive else 503), reason


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
TEXT_PLAIN = "text/plain; charset=utf-8"
STATUS_LINES = {200: "200 OK", 503: "503 SERVICE UNAVAILABLE"}  # werkzeug's spelling


def wants_html(accept: str) -> bool:
    """A browser: the Accept header names text/html itself (with a non-zero q). `*/*` (curl,
    the kubelet) and no Accept (HAProxy, the Azure LB) get the text verdict."""
    for media_range in accept.split(","):
        kind, _, params = media_range.partition(";")
        if kind.strip().lower() != "text/html":
            continue
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def probe_reply(answer: tuple[int, str], method: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of a probe answer; the one place both the fast path and the
    Flask routes build it from. OPTIONS is the same verdict with no body (Content-Length: 0,
    so an HTTP/1.1 checker does not wait for one) and an Allow header; HEAD keeps GET's length."""
    status, body_text = answer
    body = b"" if method == "OPTIONS" else (body_text + "\n").encode()
    headers = [
        ("Content-Type", TEXT_PLAIN),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    if method == "OPTIONS":
        headers.append(("Allow", PROBE_ALLOW))
    return status, headers, body


def text_answer(answer: tuple[int, str]) -> Response:
    status, headers, body = probe_reply(answer, request.method)
    return NoStoreResponse(body, status=status, headers=headers)


class ProbeFastPath:
    """WSGI middleware in front of Flask (app.wsgi_app, Flask's documented pattern) that answers
    GET/HEAD/OPTIONS of the probe paths without Flask's request machinery (`/` too, unless a
    browser asks for the page where there is one); everything else goes on to Flask. Why:
    Flask's per-request cycle (contexts, URL adapter twice, signals, response object) costs
    ~0.15 ms CPU, >99 % of a probe's work, and on 2 cores it put the probe p99 at ~2.8x a bare
    waitress app; with this the agent measured at the bare app's figures (docs/benchmarks.md).
    The answers are the same bytes as the Flask routes give."""

    def __init__(
        self,
        flask_wsgi_app: WSGIApp,
        store: VerdictStore,
        liveness: Liveness,
        page: bool = True,
    ) -> None:
        self.flask_wsgi_app = flask_wsgi_app
        self.store = store
        self.liveness = liveness
        self.page = page  # this listener serves the status page on `/` to browsers

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        if method in PROBE_METHODS:
            path = environ.get("PATH_INFO", "")
            if not (
                path == "/"
                and method != "OPTIONS"
                and self.page
                and wants_html(environ.get("HTTP_ACCEPT", ""))
            ):
                answer = probe_answer(self.store, self.liveness, path)
                if answer is not None:
                    status, headers, body = probe_reply(answer, method)
                    start_response(STATUS_LINES[status], headers)
                    return [] if method == "HEAD" else [body]
        return self.flask_wsgi_app(environ, start_response)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def healthy_states(policy: Policy) -> list[State]:
    states: list[State] = ["synced"]
    if policy.available_when_donor:
        states.append("donor")
    if policy.available_when_readonly:
        states.append("read_only")
    if policy.allow_standalone:
        states.append("standalone")
    return states


def policy_document(store: VerdictStore, policy: Policy, view: NodeView) -> dict[str, Any]:
    """The rules this node's verdict was decided by."""
    verdict = view.verdict
    applied = verdict.hold_down_seconds if verdict is not None else None
    return {
        **asdict(policy),
        "max_age_seconds": store.max_age,
        "healthy_max_age_seconds": store.healthy_max_age,
        "healthy_states": healthy_states(policy),
        "hold_down_seconds": policy.hold_down if policy.hold_down is not None else applied,
        "hold_down_source": "config" if policy.hold_down is not None else "evs.suspect_timeout",
        "hold_down_pending": verdict.hold_down_pending if verdict is not None else False,
    }


def maintenance_document(view: NodeView) -> dict[str, Any] | None:
    record = view.maintenance
    if record is None:
        return None
    return {"reason": record.reason, "since": record.since, "by": record.by, "file": record.path}


def node_document(
    store: VerdictStore, view: NodeView, policy: Policy | None = None
) -> dict[str, Any]:
    verdict = view.verdict
    fault: Fault | None = None
    if not view.healthy:
        fault = (verdict.fault if verdict is not None else None) or "node"
    document: dict[str, Any] = {
        "healthy": view.healthy,
        "state": view.state,
        "reason": view.reason,
        "age_seconds": rounded(view.age_seconds),
        "checked_at": None,
        "poll_ms": None,
        "since": None,
        "fault": fault,
        "facts": {},
        "transitions": [
            {
                "at": t.at,
                "from": t.from_state,
                "to": t.to_state,
                "reason": t.reason,
                "healthy": t.healthy,
            }
            for t in store.transitions(view.node)
        ],
        "policy": policy_document(store, policy or Policy(), view),
        "maintenance": maintenance_document(view),
    }
    if verdict is not None:
        document.update(
            checked_at=verdict.checked_at,
            poll_ms=rounded(verdict.poll_seconds * 1000, 1),
            since=verdict.since,
            facts=dict(verdict.facts),
            hold_down_seconds=verdict.hold_down_seconds,
        )
    return document


def writer_document(view: WriterView) -> dict[str, Any]:
    """The node's part in the writer election: its /writer answer and the lease as it saw it."""
    state, row = view.lease, view.lease.row if view.lease is not None else None
    return {
        "writer": view.writer,
        "reason": view.reason,
        "role": state.role if state is not None else "starting",
        "holder": (row.holder or None) if row is not None else None,
        "epoch": row.epoch if row is not None else None,
        "counter": row.counter if row is not None else None,
        "age_seconds": rounded(view.lease_age_seconds),
        "requested_by": (row.next_holder or None) if row is not None else None,
        "foreign_write": state.foreign if state is not None else None,
    }


def pod_label_document(state: PodLabelState, now: float) -> dict[str, Any]:
    """kubernetes_pod_label: whether the pod carries the role the lease gives it."""
    since = state.out_of_step_since
    return {
        "pod": state.pod,
        "namespace": state.namespace,
        "key": state.key,
        "wanted": state.wanted,
        "value": state.applied,
        "in_step": state.in_step,
        "out_of_step_seconds": None if since is None else rounded(max(0.0, now - since)),
        "error": state.error,
        "api_errors": state.api_errors,
        "cleared": state.cleared,
    }


def recovery_document(store: VerdictStore, force: str = "") -> dict[str, Any]:
    """/recovery: each node's Galera position from its datadir (read by a background job),
    whether mysqld answers and whether it is in a Primary component (from the last poll, while
    fresh), and with recovery_peers the whole cluster's recovery decision (with `force`, the
    start script's forceBootstrapPod, applied by recovery.forced: no I/O here)."""
    nodes: dict[str, Any] = {}
    now = store.clock()  # one moment: a node shown running never comes with a decision
    for view in store.views(now):
        facts = view.verdict.facts if view.verdict is not None else {}
        path, datadir, age = store.datadir(view.node)
        nodes[view.node] = recovery_node_document(
            path,
            datadir,
            age,
            running=view.running,
            primary=view.running and facts.get("wsrep_cluster_status") == "Primary",
            state=view.state,
        )
    document: dict[str, Any] = {"version": __version__, "nodes": nodes, "decision": None}
    found = store.decision(now)
    if found is not None:
        decision, reports, age = found
        decision = forced(decision, force, reports)
        document["decision"] = {
            "action": decision.action,
            "node": decision.node,
            "reason": decision.reason,
            "line": decision.line(),
            "age_seconds": round(age, 3),
            "reports": [report_row(r) for r in reports],
        }
    return document


def report_row(report: NodeReport) -> dict[str, Any]:
    """One node as the decision saw it (a row of `galera-health recover`'s table)."""
    facts = report.datadir
    grastate = facts.grastate if facts is not None else None
    position = facts.position if facts is not None else None
    return {
        "node": report.node,
        "answered": report.answered,
        "detail": report.detail or (facts.error if facts is not None else None) or None,
        "empty": facts.empty if facts is not None else None,
        "position": None if position is None else str(position),
        "safe_to_bootstrap": grastate.safe_to_bootstrap if grastate is not None else None,
        "running": report.running,
        "primary": report.primary,
    }


def kills_document(report: KillReport) -> dict[str, Any]:
    """writer_users: the old writer's session kills, and why they cannot happen, if so."""
    return {
        "killed_total": report.killed_total,
        "last_killed": report.last_killed,
        "last_at": iso(report.last_at),
        "problem": report.problem,
    }


def iso(wall: float | None) -> str | None:
    return None if wall is None else datetime.fromtimestamp(wall, timezone.utc).isoformat()


# A check's status in application/health+json (docs/status.schema.json, health_json).
CheckStatus = Literal["pass", "warn", "fail"]
# Not usable yet, but expected to become so without anyone acting.
WAITING_STATES: frozenset[State] = frozenset({"starting", "recovering"})


def health_check_status(view: NodeView) -> CheckStatus:
    """pass: usable. warn: not usable yet but expected to become so without action (no verdict
    yet, or the hold-down after a timeout). fail: anything else."""
    if view.healthy:
        return "pass"
    return "warn" if view.state in WAITING_STATES else "fail"


def health_document(views: list[NodeView]) -> dict[str, Any]:
    """draft-inadvisable-health-check (application/health+json). The top-level status is "pass"
    only when every node is usable and "fail" otherwise, exactly like /health: a consumer that
    reads this document can never route traffic to a node /health keeps out."""
    healthy = all(v.healthy for v in views)
    document: dict[str, Any] = {
        "status": "pass" if healthy else "fail",
        "version": __version__.split(".", 1)[0],
        "releaseId": __version__,
        "serviceId": "galera-health",
        "description": "MariaDB Galera node health as the galera-health agent sees it",
        "checks": {
            f"galera:{v.node}": [
                {
                    "componentId": v.node,
                    "componentType": "datastore",
                    "observedValue": v.state,
                    "status": health_check_status(v),
                    "time": iso(v.verdict.checked_at if v.verdict is not None else None),
                    "output": "" if v.healthy else v.reason,
                }
            ]
            for v in views
        },
    }
    if not healthy:
        document["output"] = "; ".join(node_line(v) for v in views if not v.healthy)
    return document


def create_app(
    store: VerdictStore,
    liveness: Liveness,
    describe: Callable[[], dict[str, Any]] | None = None,
    *,
    policy: Callable[[], Policy] | None = None,
    stats: Mapping[str, PollStats] | None = None,
    surface: str = "all",
    status_token: str | None = None,
    fast_probes: bool = True,
) -> Flask:
    """The web layer, built from what it needs: tests fill a store by hand and call this.
    `stats`: the poller's per-node counters for /metrics (none: only store-derived metrics).
    `surface`: "all", or "probe" (only the probes /health, /readyz, /livez and `/` as text: for
    a listener the LB reaches when /status, /metrics and the page are served on status_listen).
    `status_token`: a bearer token /status and /metrics require (compared in constant time).
    `fast_probes`: put ProbeFastPath in front (off only to compare it with the plain Flask routes
    in tests and benchmarks)."""
    app = Flask("galera_health")
    app.response_class = NoStoreResponse  # jsonify and errors get no-store; the page sets it
    # A probe must get 200/503, never a 308 that werkzeug would build from the client's Host
    # for //health or /health//n1. OPTIONS is a verdict on the probe paths only (HAProxy's bare
    # httpchk sends it), 405 elsewhere.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]  # nodes in configured order
    started_wall = time.time()
    started_mono = time.monotonic()
    current_policy = policy or Policy
    registry = make_registry(store, stats or {})
    page = StatusPage()

    # ProbeFastPath answers these before Flask sees them; the routes stay so that the url_map
    # knows them (405 for other methods) and the app answers the same without it.
    @app.route("/health", methods=PROBE_METHODS)
    @app.route("/readyz", methods=PROBE_METHODS)
    def health() -> Response:
        return text_answer(verdict_answer(store.views()))

    def unknown_node(node: str) -> Response:
        return text(f"unknown node {node!r}; known: {', '.join(store.nodes)}", 404)

    @app.route("/health/<node>", methods=PROBE_METHODS)
    def health_node(node: str) -> Response:
        if node not in store.nodes:
            return unknown_node(node)
        return text_answer(verdict_answer([store.view(node)]))

    @app.route("/livez", methods=PROBE_METHODS)
    def livez() -> Response:
        return text_answer(liveness_answer(liveness))

    @app.route("/writer", methods=PROBE_METHODS)
    def writer() -> Response:
        return text_answer(writer_answer(store))

    @app.route("/writer/<node>", methods=PROBE_METHODS)
    def writer_node(node: str) -> Response:
        if node not in store.nodes:
            return unknown_node(node)
        return text_answer(writer_node_answer(store.writer_view(node)))

    @app.route("/reader", methods=PROBE_METHODS)
    def reader() -> Response:
        return text_answer(reader_answer(store))

    @app.route("/reader/<node>", methods=PROBE_METHODS)
    def reader_node(node: str) -> Response:
        if node not in store.nodes:
            return unknown_node(node)
        return text_answer(reader_node_answer(store, node))

    serves_page = surface != "probe"

    @app.route("/", methods=PROBE_METHODS)
    def index() -> Response:
        """The same probe as /health, so that a load balancer left at its default path (Azure,
        HAProxy's bare httpchk) tells the truth. A browser gets the status page as the body,
        with the same status code; on the probe-only listener (no page there: its /status is
        elsewhere) it gets the text like everyone else. The page holds no data and the verdict
        is /health's: neither needs the status token (the page's own fetch of /status does)."""
        answer = verdict_answer(store.views())
        accept = request.headers.get("Accept", "")
        if serves_page and request.method != "OPTIONS" and wants_html(accept):
            return page.response(answer[0])
        return text_answer(answer)

    if surface != "probe":
        # /status and /metrics reveal the cluster's layout and the agent's settings: they may
        # live on their own listener and behind a bearer token; the probe answers never do.
        if status_token is not None:

            @app.before_request
            def require_token() -> Response | None:
                if request.path in PROBE_PATHS or request.path.startswith(
                    ("/health/", "/writer/", "/reader/")
                ):
                    return None
                offered = request.headers.get("Authorization", "")
                expected = f"Bearer {status_token}"
                if hmac.compare_digest(offered.encode(), expected.encode()):
                    return None
                response = text("unauthorized; send Authorization: Bearer <status token>", 401)
                response.headers["WWW-Authenticate"] = 'Bearer realm="galera-health"'
                return response

        @app.get("/status")
        def status() -> Response:
            views = store.views()
            if request.args.get("format") == "health":
                health = health_document(views)
                answer = jsonify(health)
                answer.mimetype = "application/health+json"
                # The draft asks 2xx for pass/warn and 4xx-5xx for fail; "pass" is /health's 200.
                answer.status_code = 200 if health["status"] == "pass" else 503
                return answer
            document: dict[str, Any] = {
                "version": __version__,
                "driver_mode": DRIVER_MODE,
                "started_at": started_wall,
                "uptime_seconds": round(time.monotonic() - started_mono, 3),
                "max_age_seconds": store.max_age,
                "healthy_max_age_seconds": store.healthy_max_age,
                "healthy": all(v.healthy for v in views),
                "draining": store.draining,
                "nodes": {v.node: node_document(store, v, current_policy()) for v in views},
            }
            if store.writer_enabled:
                for view in store.writer_views():
                    document["nodes"][view.node]["writer"] = writer_document(view)
                    pod = store.pod_label(view.node)
                    if pod is not None:
                        document["nodes"][view.node]["writer"]["pod_label"] = pod_label_document(
                            pod, time.monotonic()
                        )
                    kills = store.kill_report(view.node)
                    if kills is not None:
                        document["nodes"][view.node]["writer"]["sessions"] = kills_document(kills)
            if describe is not None:
                document["agent"] = describe()
            response = jsonify(document)
            response.status_code = 200
            return response

        @app.get("/recovery")
        def recovery() -> Response:
            return jsonify(recovery_document(store, request.args.get("force", "")))

        @app.get("/metrics")
        def metrics() -> Response:
            try:
                encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            except (TypeError, ValueError):
                # a malformed Accept (version=abc) must not make /metrics a 500
                encoder, content_type = generate_latest, CONTENT_TYPE_LATEST
            return NoStoreResponse(encoder(registry), status=200, content_type=content_type)

    @app.errorhandler(404)
    def not_found(_: Exception) -> Response:
        return text(
            "not found; try /health, /readyz, /livez, /writer, /reader, /status, /recovery, "
            "/metrics or /",
            404,
        )

    @app.errorhandler(405)
    def not_allowed(error: MethodNotAllowed) -> Response:
        allowed = [m for m in PROBE_METHODS if m in (error.valid_methods or ("GET", "HEAD"))]
        allow = ", ".join(allowed)
        listed = ", ".join(allowed[:-1]) + " or " + allowed[-1]
        response = text(f"method not allowed; use {listed}", 405)
        response.headers["Allow"] = allow
        return response

    if fast_probes:
        app.wsgi_app = ProbeFastPath(  # type: ignore[method-assign]
            app.wsgi_app, store, liveness, page=serves_page
        )
    return app
