"""A poll that hangs beyond every deadline (a driver bug, injected at the driver boundary):
the real poller, store, Flask app and waitress server must still fail closed."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from waitress.server import create_server

from galera_health.config import Credentials, NodeAddress, Settings, Timeouts
from galera_health.poller import Poller
from galera_health.probe import NodeProbe
from galera_health.store import VerdictStore
from galera_health.web import SERVER_SETTINGS, create_app

from ..samples import SYNCED


class HangingConnection:
    """Answers like a synced node a few times, then blocks inside execute() until released."""

    def __init__(self, release: threading.Event, good_polls: int) -> None:
        self.release = release
        self.good_polls = good_polls
        self.result: list[tuple[Any, ...]] = []

    def cursor(self) -> HangingConnection:
        return self

    def execute(self, statement: str) -> None:
        if statement.startswith("SELECT @@GLOBAL"):
            self.result = [("evs.suspect_timeout = PT3S",)]
            return
        if statement.startswith("SET"):
            return
        if self.good_polls <= 0:
            self.release.wait()
        self.good_polls -= 1
        self.result = [(k.upper(), v) for k, v in SYNCED.items()]

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.result[0]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.result

    def close(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


def get(port: int, path: str) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode(), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), time.monotonic() - started


@pytest.fixture
def hung_agent() -> Iterator[tuple[int, Poller, threading.Event]]:
    release = threading.Event()
    settings = Settings(
        nodes=(NodeAddress("n1", "127.0.0.1", 3306),),
        credentials=Credentials(user="health"),
        interval=0.2,
        timeouts=Timeouts(connect=1, read=1, write=1, statement=0.5),
        max_age_setting=5.0,  # a healthy verdict expires sooner: healthy_max_age 1.7 s
        stuck_after=3.0,
    )

    def factory(*args: Any, **kwargs: Any) -> NodeProbe:
        return NodeProbe(
            *args, **kwargs, connector=lambda **_: HangingConnection(release, good_polls=3)
        )

    assert settings.healthy_max_age == pytest.approx(0.2 + 1 + 0.5)
    store = VerdictStore(["n1"], settings.max_age, healthy_max_age=settings.healthy_max_age)
    poller = Poller(settings, store, probe_factory=factory)
    server = create_server(
        create_app(store, poller.liveness), listen="127.0.0.1:0", **SERVER_SETTINGS
    )
    thread = threading.Thread(target=server.run, daemon=True)
    poller.start()
    thread.start()
    try:
        yield int(server.effective_port), poller, release
    finally:
        release.set()
        poller.stop()
        server.close()
        thread.join(timeout=5)


def test_hung_poll_turns_stale_and_livez_stays_truthful(
    hung_agent: tuple[int, Poller, threading.Event],
) -> None:
    port, poller, release = hung_agent
    deadline = time.monotonic() + 5
    while get(port, "/health")[0] != 200:
        assert time.monotonic() < deadline, "never healthy"
        time.sleep(0.05)
    healthy_until = time.monotonic()
    # The 4th poll hangs forever. The last 200 vouches for healthy_max_age (1.7 s), not for
    # max_age (5 s): the hang must turn into a 503 well before max_age.
    while True:
        status, body, seconds = get(port, "/health")
        assert seconds < 1.0
        if status == 503:
            break
        assert time.monotonic() - healthy_until < 1.7 + 0.2 + 1.0, "never went stale"
        time.sleep(0.05)
    assert body.startswith("n1: stale (last verdict"), body
    assert "healthy_max_age 1.7 s" in body, body
    assert "it said synced" in body
    # The agent itself is alive and says so until the poll has hung past stuck_after ...
    status, body, _ = get(port, "/livez")
    assert (status, body) == (200, "ok\n")
    deadline = time.monotonic() + 10
    while get(port, "/livez")[0] == 200:
        assert time.monotonic() < deadline, "/livez never reported the stuck poll"
        time.sleep(0.1)
    status, body, _ = get(port, "/livez")
    assert status == 503 and body.startswith("poller stuck: n1 poll running for"), body
    # ... while no second poll of the node was ever started beside the hung one.
    assert poller.runtimes["n1"].poll.stats.counts().skipped > 0
    release.set()
    deadline = time.monotonic() + 5
    while get(port, "/livez")[0] != 200:
        assert time.monotonic() < deadline, "/livez did not recover"
        time.sleep(0.05)
