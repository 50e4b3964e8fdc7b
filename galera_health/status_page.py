"""GET / from a browser: one self-contained HTML page (inline CSS and JS, nothing external)
that fetches /status every 2 s and draws it. The page holds no server data itself: the script
puts every server string into the DOM with textContent, never as markup. It comes with the
node verdict's status code (200/503), like /health: `/` is a probe too.

The page is read once from the package at start; the handler only returns those bytes, with a
Content-Security-Policy that allows exactly its own inline style and script (by hash), fetches
to the agent itself and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from flask import Response


def _hash_source(kind: str, page: str) -> str:
    match = re.search(rf"<{kind}>(.*?)</{kind}>", page, re.DOTALL)
    if match is None:
        raise ValueError(f"status page has no inline <{kind}>")
    digest = hashlib.sha256(match.group(1).encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


class StatusPage:
    def __init__(self) -> None:
        page = files("galera_health").joinpath("static/index.html").read_text(encoding="utf-8")
        self.body = page.encode("utf-8")
        self.csp = (
            "default-src 'none'; "
            f"script-src {_hash_source('script', page)}; "
            f"style-src {_hash_source('style', page)}; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )

    def response(self, status: int) -> Response:
        """The page with the node verdict's status code (`/` is a probe too): 200 or 503. The
        page draws from /status either way, which is always 200."""
        response = Response(self.body, status=status, mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = self.csp
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response
