"""The floor: a bare WSGI hello-world served by waitress with the agent's own SERVER_SETTINGS.

Why: probe_latency.py and footprint.py measure the agent beside it in the same run, so the agent's
figures read as a ratio to what waitress itself costs on this (shared, noisy) machine.
Usage: python bench/bare_app.py --port 8080
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    args = parser.parse_args()
    from waitress import serve

    serve(app, listen=f"127.0.0.1:{args.port}", **SERVER_SETTINGS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
