"""ProbeFastPath answers exactly what the Flask routes answer, for any method, path, Accept
header, listener surface, token setting and state.

Why: the fast path is a second way to produce the probe answer; if it ever differed from the Flask
routes (a header, a status line, a path it claims that Flask would 404), a load balancer could see
a different verdict than the tests of the Flask routes prove. Each request goes to the app with
the fast path and to the same app without it; status, headers and body must be equal.
"""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from galera_health.maintenance import Maintenance
from galera_health.store import VerdictStore
from galera_health.verdict import Policy, ProbeError, Snapshot, evaluate
from galera_health.web import ProbeFastPath, create_app

from ..samples import SYNCED
from .conftest import Clock

PATHS = [
    "/health", "/readyz", "/livez", "/health/n1", "/health/n2", "/health/n3", "/health/",
    "/health//n1", "/health/n1/", "/health/n1/x", "/Health", "/health%2Fn1", "/health/n%31",
    "/readyz/", "/livez/", "//health", "/health?x=1", "/nope", "/health/status", "/", "//",
    "/?x=1", "/index.html", "/reader", "/reader/n1", "/reader/n9", "/reader/",
]  # fmt: skip
# Flask-only pages whose bodies carry times (uptime, scrape durations): the fall-through to them
# is checked in the second test.
TIMED_PAGES = ("/status", "/metrics")
ACCEPTS = [
    None, "*/*", "text/html", "text/html,application/xhtml+xml,*/*;q=0.8", "text/html;q=0",
    "text/plain", "application/json",
]  # fmt: skip
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "get"]
STATES: list[tuple[str, Any]] = [
    ("none", None),
    ("synced", Snapshot(SYNCED)),
    ("non_primary", Snapshot(dict(SYNCED, wsrep_cluster_status="non-Primary"))),
    ("timeout", ProbeError("timeout", "read timed out after 2 s")),
]


def build(
    states: tuple[int, int],
    stale: bool,
    maintenance: bool,
    alive: bool,
    surface: str = "all",
    token: str | None = None,
) -> tuple[Any, Any]:
    clock = Clock()
    store = VerdictStore(["n1", "n2"], max_age=5.0, clock=clock)
    for node, index in zip(("n1", "n2"), states, strict=True):
        observation = STATES[index][1]
        if observation is not None:
            verdict = evaluate(observation, Policy(), None, node, clock.now, 1e9, 0.003)
            store.publish(verdict)
    if maintenance:
        store.set_maintenance({"n2": Maintenance("patching", 1.0, "ops", "/tmp/m")})
    if stale:
        clock.now += 6.0

    def liveness() -> tuple[bool, str]:
        return alive, "ok" if alive else "poller stuck: n1 poll running for 99 s"

    with_fast = create_app(store, liveness, surface=surface, status_token=token)
    without = create_app(store, liveness, surface=surface, status_token=token, fast_probes=False)
    assert isinstance(with_fast.wsgi_app, ProbeFastPath)
    assert not isinstance(without.wsgi_app, ProbeFastPath)
    return with_fast, without


def answer(
    app: Any, method: str, path: str, accept: str | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = {} if accept is None else {"Accept": accept}
    response = Client(app).open(path, method=method, headers=headers)
    return response.status, sorted(response.headers.items()), response.get_data()


@settings(max_examples=250, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    path=st.sampled_from(PATHS) | st.text(min_size=0, max_size=12).map(lambda t: "/" + t),
    states=st.tuples(st.integers(0, len(STATES) - 1), st.integers(0, len(STATES) - 1)),
    stale=st.booleans(),
    maintenance=st.booleans(),
    alive=st.booleans(),
    accept=st.sampled_from(ACCEPTS),
    surface=st.sampled_from(["all", "probe", "status"]),
    token=st.sampled_from([None, "t0ken"]),
)
def test_fast_path_answers_like_flask(
    method: str,
    path: str,
    states: tuple[int, int],
    stale: bool,
    maintenance: bool,
    alive: bool,
    accept: str | None,
    surface: str,
    token: str | None,
) -> None:
    assume(path.split("?")[0] not in TIMED_PAGES)
    with_fast, without = build(states, stale, maintenance, alive, surface, token)
    assert answer(with_fast, method, path, accept) == answer(without, method, path, accept)


def test_fast_path_answers_probes_and_passes_the_rest_to_flask() -> None:
    with_fast, _ = build((1, 2), False, False, True)
    fast_path: ProbeFastPath = with_fast.wsgi_app
    seen: list[str] = []
    inner = fast_path.flask_wsgi_app

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    fast_path.flask_wsgi_app = counting
    client = Client(with_fast)
    assert client.get("/health/n1").status == "200 OK"
    assert client.get("/health").status == "503 SERVICE UNAVAILABLE"
    assert client.head("/livez").status == "200 OK"
    assert client.options("/health").status == "503 SERVICE UNAVAILABLE"
    assert client.get("/").status == "503 SERVICE UNAVAILABLE"
    assert client.options("/", headers={"Accept": "text/html"}).status_code == 503
    assert seen == []  # the probe answers never reached Flask
    assert client.get("/", headers={"Accept": "text/html"}).status_code == 503  # the page
    assert client.get("/health/n9").status_code == 404
    assert client.post("/health").status_code == 405
    assert client.get("/status").status_code == 200
    assert seen == ["/", "/health/n9", "/health", "/status"]
