"""HTTP: Flask routes that only read the store, and the tuned waitress server that serves them.

No handler opens, uses or waits for a database socket, or for a lock held across I/O.
Contract: 200 only when usable, 503 otherwise, always a short text reason, Content-Length and
Cache-Control: no-store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify

from . import __version__
from .probe import DRIVER_MODE
from .store import NodeView, VerdictStore

Liveness = Callable[[], tuple[bool, str]]

# waitress defaults let 150 idle connections delay a probe by minutes (connection_limit 100,
# no cleanup); these answered in ~10 ms with 150 idle or slowloris connections (DESIGN.md).
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


def text(body: str, status: int) -> Response:
    return Response(body + "\n", status=status, mimetype="text/plain")


def node_line(view: NodeView) -> str:
    return f"{view.node}: {view.reason}"


def verdict_response(views: list[NodeView]) -> Response:
    """200 only when every node in `views` is usable; the body names the ones that are not."""
    bad = [v for v in views if not v.healthy]
    if bad:
        return text("; ".join(node_line(v) for v in bad), 503)
    return text("; ".join(node_line(v) for v in views), 200)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def node_document(store: VerdictStore, view: NodeView) -> dict[str, Any]:
    verdict = view.verdict
    document: dict[str, Any] = {
        "healthy": view.healthy,
        "state": view.state,
        "reason": view.reason,
        "age_seconds": rounded(view.age_seconds),
        "checked_at": None,
        "poll_ms": None,
        "since": None,
        "fault": None if view.healthy else "node",
        "facts": {},
        "transitions": [
            {
                "at": t.at,
                "from": t.from_state,
                "to": t.to_state,
                "reason": t.reason,
            }
            for t in store.transitions(view.node)
        ],
    }
    if verdict is not None:
        document.update(
            checked_at=verdict.checked_at,
            poll_ms=rounded(verdict.poll_seconds * 1000, 1),
            since=verdict.since,
            fault=None if view.healthy else (verdict.fault or "node"),
            facts=dict(verdict.facts),
            hold_down_seconds=verdict.hold_down_seconds,
        )
    return document


def create_app(
    store: VerdictStore,
    liveness: Liveness,
    describe: Callable[[], dict[str, Any]] | None = None,
) -> Flask:
    """The web layer, built from what it needs: tests fill a store by hand and call this."""
    app = Flask("galera_health")
    started_wall = time.time()
    started_mono = time.monotonic()

    @app.after_request
    def no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/health")
    @app.get("/readyz")
    def health() -> Response:
        return verdict_response(store.views())

    @app.get("/health/<node>")
    def health_node(node: str) -> Response:
        if node not in store.nodes:
            return text(f"unknown node {node!r}; known: {', '.join(store.nodes)}", 404)
        return verdict_response([store.view(node)])

    @app.get("/livez")
    def livez() -> Response:
        alive, reason = liveness()
        return text(reason, 200 if alive else 503)

    @app.get("/status")
    def status() -> Response:
        views = store.views()
        document: dict[str, Any] = {
            "version": __version__,
            "driver_mode": DRIVER_MODE,
            "started_at": started_wall,
            "uptime_seconds": round(time.monotonic() - started_mono, 3),
            "max_age_seconds": store.max_age,
            "healthy": all(v.healthy for v in views),
            "nodes": {v.node: node_document(store, v) for v in views},
        }
        if describe is not None:
            document["agent"] = describe()
        response = jsonify(document)
        response.status_code = 200
        return response

    @app.errorhandler(404)
    def not_found(_: Exception) -> Response:
        return text("not found; try /health, /readyz, /livez or /status", 404)

    @app.errorhandler(405)
    def not_allowed(_: Exception) -> Response:
        response = text("method not allowed; use GET or HEAD", 405)
        response.headers["Allow"] = "GET, HEAD, OPTIONS"
        return response

    return app
