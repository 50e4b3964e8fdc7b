"""The agent with one recommended hot-path change monkeypatched in, for an A/B bench run.

Why: galera_health/ is not edited from bench/; this measures a proposed change against the
unchanged agent in the same run (bench/profile_health.py --variant NAME). Variants:

  fast_probes  a plain-WSGI fast path in front of Flask (app.wsgi_app middleware, the documented
               Flask pattern) that answers GET/HEAD /health, /readyz, /health/<known node> and
               /livez with the same bytes and headers; everything else still goes through Flask.
  threads2     SERVER_SETTINGS threads=2 instead of 4 (less GIL hand-off on a 2-core machine).
  switch1ms    sys.setswitchinterval(0.001) instead of 5 ms: the asyncore thread waits less for
               the GIL while a worker runs Flask.

Join variants with "+" to apply several (fast_probes+threads2).

Usage: python bench/patched_agent.py --patch fast_probes serve --node ... (galera-health args)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from galera_health import cli, web
from galera_health.store import VerdictStore

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
TEXT = "text/plain; charset=utf-8"
OK, UNAVAILABLE = "200 OK", "503 SERVICE UNAVAILABLE"  # werkzeug's status lines


def fast_probes(wsgi_app: WSGIApp, store: VerdictStore, liveness: web.Liveness) -> WSGIApp:
    def answer(
        start_response: Callable[..., Any], status: str, text: str, head: bool
    ) -> Iterable[bytes]:
        body = (text + "\n").encode()
        start_response(
            status,
            [
                ("Content-Type", TEXT),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [] if head else [body]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method in ("GET", "HEAD"):
            path = environ.get("PATH_INFO", "")
            head = method == "HEAD"
            views = None
            if path in ("/health", "/readyz"):
                views = store.views()
            elif path.startswith("/health/") and path[8:] in store.nodes:
                views = [store.view(path[8:])]
            elif path == "/livez":
                alive, reason = liveness()
                return answer(start_response, OK if alive else UNAVAILABLE, reason, head)
            if views is not None:
                bad = [v for v in views if not v.healthy]
                text = "; ".join(web.node_line(v) for v in (bad or views))
                return answer(start_response, UNAVAILABLE if bad else OK, text, head)
        return wsgi_app(environ, start_response)

    return app


def with_fast_probes(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_app(store: VerdictStore, liveness: web.Liveness, *a: Any, **k: Any) -> Any:
        flask_app = original(store, liveness, *a, **k)
        flask_app.wsgi_app = fast_probes(flask_app.wsgi_app, store, liveness)
        return flask_app

    return create_app


def main() -> int:
    argv = sys.argv[1:]
    if len(argv) < 2 or argv[0] != "--patch" or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    variant, rest = argv[1], argv[2:]
    for patch in variant.split("+"):  # e.g. fast_probes+threads2
        if patch == "fast_probes":
            web.create_app = with_fast_probes(web.create_app)
        elif patch == "threads2":
            web.SERVER_SETTINGS["threads"] = 2
        elif patch == "switch1ms":
            sys.setswitchinterval(0.001)
        else:
            print(f"unknown variant {patch!r}; see --help", file=sys.stderr)
            return 2
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main())
