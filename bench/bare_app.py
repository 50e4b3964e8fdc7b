"""The floor: a bare WSGI hello-world served by waitress with the agent's own SERVER_SETTINGS.

Why: probe_latency.py and footprint.py measure the agent beside it in the same run, so the agent's
figures read as a ratio to what waitress itself costs on this (shared, noisy) machine. With
--flask it serves the same bytes from a plain Flask route instead: the reference issue 6 quotes
("a plain Flask route measured about 1.7 x the bare p99").
Usage: python bench/bare_app.py --port 8080 [--flask]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from galera_health.web import SERVER_SETTINGS

BODY = b"n1: synced\n"
HEADERS = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Content-Length", str(len(BODY))),
    ("Cache-Control", "no-store"),
]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", HEADERS)
    return [BODY]


def plain_flask_app() -> Any:
    from flask import Flask, Response

    flask_app = Flask("plain")

    @flask_app.get("/health")
    def health() -> Response:
        return Response(BODY, mimetype="text/plain", headers={"Cache-Control": "no-store"})

    return flask_app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--flask", action="store_true", help="a plain Flask route instead")
    args = parser.parse_args()
    from waitress import serve

    serve(
        plain_flask_app() if args.flask else app, listen=f"127.0.0.1:{args.port}", **SERVER_SETTINGS
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
