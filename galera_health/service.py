"""The running agent as one object: its store, poller, pod labeler and listeners, started,
drained and stopped in-process (a test drives it on loopback ports the way `serve` does).

`cli.serve` owns what belongs to the process (signal handlers, exit codes, the open-files
limit); this module owns the wiring. Nothing here waits on MySQL: the HTTP side reads the store
the poller fills (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import ssl
import threading
from collections.abc import Callable
from typing import Any, Protocol

from . import __version__
from .config import ConfigError, ListenAddress, Settings, describe
from .poller import Poller, log_transition
from .store import VerdictStore

log = logging.getLogger("galera_health")

# How long stop() waits for a listener's thread to end (it ends at its next loop turn, at
# once; waitress then waits for its worker threads' answers in progress, at most 5 s).
JOIN_SECONDS = 10.0


class StartError(Exception):
    """The agent cannot start: one line naming the cause and the fix (`serve` exits 2)."""


class Listener(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...


def read_token(path: str | None) -> str | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        token = handle.read().strip()
    return token or None


def summary(config: dict[str, Any]) -> dict[str, Any]:
    """The part of describe()'s document the start line shows at info: what is watched, as
    whom, where."""
    return {key: config[key] for key in ("nodes", "user", "password_source", "listen")}


class WaitressListener:
    """One waitress server in a socket map of its own, with a pipe in that map. waitress's
    loop ends on a SystemExit (what a signal handler raises in the main thread); `stop()`
    writes to the pipe, from any thread or a signal handler, and the loop raises it in its own
    thread, so a listener run by a test's thread stops like the main one stops on a signal."""

    def __init__(self, app: Any, address: ListenAddress) -> None:
        from waitress import wasyncore
        from waitress.server import create_server

        from .web import SERVER_SETTINGS

        class Waker(wasyncore.file_dispatcher):  # type: ignore[misc]
            def readable(self) -> bool:
                return True

            def writable(self) -> bool:
                return False

            def handle_read(self) -> None:
                self.recv(64)
                raise SystemExit(0)

        self._map: dict[int, Any] = {}
        self.server = create_server(app, map=self._map, listen=address.display(), **SERVER_SETTINGS)
        read_end, self._wake_end = os.pipe()
        os.set_blocking(self._wake_end, False)  # a signal handler's write never blocks
        Waker(read_end, map=self._map)  # file_dispatcher keeps a dup of the read end
        os.close(read_end)
        # re-entrant: stop() may run in a signal handler that interrupted this thread inside
        self._lock = threading.RLock()
        self._state = "bound"  # -> "running" -> "closed", or -> "closing" -> "closed"
        self._close_all = wasyncore.close_all

    def run(self) -> None:
        """Serve until stop(); closes every socket of the listener when it returns."""
        with self._lock:
            if self._state != "bound":
                return
            self._state = "running"
        try:
            self.server.run()  # returns on the SystemExit the pipe raises (or a signal's)
        finally:
            self._close()

    def stop(self) -> None:
        """End run() at its next loop turn; close at once if it never ran."""
        with self._lock:
            state = self._state
            if state == "bound":
                self._state = "closing"
            elif state == "running":
                with contextlib.suppress(BlockingIOError):  # full: a wake is pending anyway
                    os.write(self._wake_end, b"x")
        if state == "bound":
            self._close()

    def _close(self) -> None:
        self.server.task_dispatcher.shutdown()
        self._close_all(self._map)
        with self._lock:
            self._state = "closed"
            os.close(self._wake_end)


class TlsStatusServer:
    """The status listener over HTTPS. waitress has no TLS, so this one listener (a management
    surface, not the LB's probe path) is served by cheroot, imported only when configured."""

    def __init__(self, settings: Settings, app: Any) -> None:
        from cheroot import wsgi
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        assert settings.status_listen is not None
        assert settings.status_tls_cert is not None and settings.status_tls_key is not None
        # fail here, with the file named, rather than in cheroot's thread
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.status_tls_cert, settings.status_tls_key
        )
        self.server = wsgi.Server(
            (settings.status_listen.host, settings.status_listen.port),
            app,
            numthreads=4,
            max=64,
            timeout=10,
            shutdown_timeout=1,
            server_name="galera-health",
        )
        self.server.ssl_adapter = BuiltinSSLAdapter(
            settings.status_tls_cert, settings.status_tls_key
        )
        self.server.prepare()  # binds now: a port in use is reported at start

    def run(self) -> None:
        if self.server.ready:  # not stopped before it ran
            self.server.serve()

    def stop(self) -> None:
        self.server.stop()


class Agent:
    """`serve` without the process: `start()` binds every listener and starts the jobs, `run()`
    serves in the calling thread until `stop()`, `drain()` is SIGTERM's 503 `draining` for
    drain_seconds and then a stop. Installs no signal handler (cli.serve does)."""

    def __init__(
        self, settings: Settings, reload_settings: Callable[[], Settings] | None = None
    ) -> None:
        try:
            self._status_token = read_token(settings.status_token_file)
        except OSError as exc:
            raise StartError(f"cannot read status_token_file: {exc.strerror}") from None
        self.settings = settings
        self.store = VerdictStore(
            [n.name for n in settings.nodes],
            settings.max_age,
            healthy_max_age=settings.healthy_max_age,
        )
        self.poller = Poller(settings, self.store, reload_settings=reload_settings)
        self._labeler = None
        if settings.kubernetes_pod_label:
            from .pod_labeler import labeler_for

            try:
                self._labeler = labeler_for(settings, self.store, os.environ)
            except ConfigError as exc:
                raise StartError(str(exc)) from None
        self._listeners: list[Listener] = []  # the first is the main one (listen)
        self._threads: list[threading.Thread] = []
        self._agent_check: Any = None  # agent_check.AgentCheckServer, imported only if set
        self._drain_timer: threading.Timer | None = None
        # re-entrant: stop() and drain() run in signal handlers, which may interrupt the main
        # thread inside run()'s short critical section
        self._lock = threading.RLock()
        # new -> starting -> started -> running -> shut (stop() at any point goes to shut)
        self._phase = "new"
        self._stop_requested = False
        self.stopped = threading.Event()  # set once everything is stopped and closed

    def _app(self, surface: str) -> Any:
        from .web import create_app

        poller = self.poller
        return create_app(
            self.store,
            poller.liveness,
            lambda: describe(poller.settings),
            policy=lambda: poller.policy,
            stats=poller.stats(),
            surface=surface,
            status_token=self._status_token,
        )

    def _bind(self) -> None:
        settings = self.settings
        separate = settings.status_listen is not None
        for surface, address in (
            ("probe" if separate else "all", settings.listen),
            ("status", settings.status_listen),
        ):
            if address is None:
                continue
            try:
                if surface == "status" and settings.status_tls_cert is not None:
                    self._listeners.append(TlsStatusServer(settings, self._app(surface)))
                else:
                    self._listeners.append(WaitressListener(self._app(surface), address))
            except (OSError, ssl.SSLError) as exc:
                raise StartError(
                    f"cannot listen on {address.display()}: {exc.strerror or exc}; "
                    "choose another address or stop what uses that port"
                ) from None
        if settings.agent_check_listen is not None:
            from .agent_check import AgentCheckServer

            address = settings.agent_check_listen
            try:
                self._agent_check = AgentCheckServer(self.store, address.host, address.port)
            except OSError as exc:
                raise StartError(
                    f"cannot listen on {address.display()} (agent_check_listen): "
                    f"{exc.strerror}; choose another address or stop what uses that port"
                ) from None

    def start(self) -> None:
        """Bind every listener (a StartError, with nothing left open, when one cannot), then
        start the jobs and every listener but the main one, which run() serves."""
        with self._lock:
            if self._phase != "new":
                raise RuntimeError(f"the agent cannot start: it is {self._phase}")
            self._phase = "starting"
        try:
            self._bind()
        except StartError:
            for listener in self._listeners:
                listener.stop()
            with self._lock:
                self._phase = "shut"
            self.stopped.set()
            raise
        self.poller.start()
        if self._labeler is not None:
            self._labeler.start()
        self._log_start()
        for listener in self._listeners[1:]:
            thread = threading.Thread(target=listener.run, name="status-listener", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._agent_check is not None:
            self._agent_check.start()
        with self._lock:
            self._phase = "started"
            stop_now = self._stop_requested  # asked (a signal) while it was starting
        if stop_now:
            self._shutdown()

    def _log_start(self) -> None:
        settings = self.settings
        config = describe(settings)
        log.debug(
            "effective config: %s",
            json.dumps(config, separators=(",", ":")),
            extra={"event": "config", "config": config},
        )
        short = summary(config)
        log.info(
            "serving on http://%s%s; nodes %s; user %s (password from %s); "
            "full config at log_level debug and in /status",
            settings.listen.display(),
            (
                f" (status on {'https' if settings.status_tls_cert else 'http'}://"
                f"{settings.status_listen.display()})"
            )
            if settings.status_listen
            else "",
            ", ".join(f"{name}={address}" for name, address in short["nodes"].items()),
            short["user"],
            short["password_source"],
            extra={"event": "start", "version": __version__, "config": short},
        )

    def run(self) -> None:
        """Serve the main listener in this thread until stop() (or a signal's SystemExit),
        then stop and close everything."""
        with self._lock:
            if self._phase != "started":
                return
            self._phase = "running"
        try:
            self._listeners[0].run()
        except SystemExit:
            pass
        finally:
            self._shutdown()

    def drain(self) -> bool:
        """SIGTERM: answer 503 draining long enough for the LB to see it, still serving, then
        stop. False when it stops at once instead: already draining (a second SIGTERM) or
        drain_seconds = 0."""
        seconds = self.poller.settings.drain_seconds
        if self.store.draining is not None or seconds <= 0:
            self.stop()
            return False
        for transition in self.store.start_drain(f"agent stopping, exit in {seconds:g} s"):
            log_transition(transition)
        timer = threading.Timer(seconds, self.stop)
        timer.daemon = True
        self._drain_timer = timer
        timer.start()
        return True

    def stop(self) -> None:
        """From any thread or a signal handler, as often as wanted: run() returns at once and
        everything is stopped and closed (`stopped` is set then); without run(), here."""
        with self._lock:
            self._stop_requested = True
            phase = self._phase
        if phase == "running":
            self._listeners[0].stop()  # run() then does the rest in its own thread
        elif phase in ("new", "started"):
            self._shutdown()
        # starting: start() shuts down when it ends; shut: nothing left to do

    def _shutdown(self) -> None:
        with self._lock:
            if self._phase == "shut":
                return
            self._phase = "shut"
        timer = self._drain_timer
        if timer is not None:
            timer.cancel()
        self.poller.stop()
        if self._labeler is not None:
            self._labeler.stop()
        for listener in self._listeners:
            listener.stop()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(JOIN_SECONDS)
        if self._agent_check is not None:
            self._agent_check.close()
        log.info("stopped")
        self.stopped.set()
