"""Fake servers on 127.0.0.1 for fault tests.

Each is a context manager with ``.port`` and ``.close()``; the ones that need a
thread run it as a daemon and stop it within about a second on ``close()``.

- :class:`SilentServer`: accepts TCP connections and never writes a byte (a
  MySQL client waits for the server greeting forever).
- :class:`Blackhole`: a listener whose accept queue is full, so the kernel
  drops further SYNs (a connect times out instead of being refused).
- :class:`StallingProxy`: forwards the server's greeting, then forwards
  nothing while stalled (the client's auth reply is swallowed); ``resume()`` /
  ``stall()`` switch forwarding on and off with the sockets kept open.
- :class:`SwitchProxy`: a proxy to a real node that turns, at once, into a
  silent server or a blackhole and back (bench/detection_time.py).

Listeners bind port 0 and hold their port from then on, so an ephemeral port is
fine here (nothing is chosen now and bound later).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from types import TracebackType
from typing import TypeVar

__all__ = ["Blackhole", "FaultServerError", "SilentServer", "StallingProxy", "SwitchProxy"]

HOST = "127.0.0.1"
_TICK = 0.1  # how often the threads look at their stop flag
_JOIN_TIMEOUT = 2.0

_Self = TypeVar("_Self", bound="_FaultServer")


class FaultServerError(RuntimeError):
    """A fake server could not be set up as promised."""


class _FaultServer:
    port: int

    def close(self) -> None:
        raise NotImplementedError

    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _listener(backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(backlog)
    return sock


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()


class SilentServer(_FaultServer):
    """Accepts connections and never sends anything; sockets stay open until close()."""

    def __init__(self) -> None:
        self._listen = _listener(64)
        self.port = int(self._listen.getsockname()[1])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(
            target=self._run, name=f"silent-server-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def accepted(self) -> int:
        """How many connections were accepted so far."""
        with self._lock:
            return len(self._accepted)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._listen], [], [], _TICK)
                if not ready:
                    continue
                conn, _ = self._listen.accept()
            except OSError:
                return
            with self._lock:
                if self._stop.is_set():
                    conn.close()
                    return
                self._accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(_JOIN_TIMEOUT)
        with self._lock:
            socks, self._accepted = self._accepted, []
        _close_all([*socks, self._listen])


class Blackhole(_FaultServer):
    """A listener with backlog 0 whose accept queue is full: further SYNs are dropped.

    The constructor checks that a connect with a ``verify_timeout`` timeout
    really times out, and raises FaultServerError if the kernel answers.
    """

    def __init__(self, fillers: int = 2, verify_timeout: float = 0.5) -> None:
        self._listen = _listener(0)
        self.port = int(self._listen.getsockname()[1])
        self._fillers: list[socket.socket] = []
        try:
            for _ in range(fillers):
                filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self._fillers.append(filler)
                filler.setblocking(False)
                filler.connect_ex((HOST, self.port))
            self._verify(verify_timeout)
        except BaseException:
            self.close()
            raise

    def _verify(self, timeout: float) -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(timeout)
        try:
            probe.connect((HOST, self.port))
        except TimeoutError:
            return
        except OSError as exc:
            raise FaultServerError(
                f"blackhole on port {self.port}: connect failed instead of timing out: {exc}"
            ) from exc
        finally:
            probe.close()
        raise FaultServerError(f"blackhole on port {self.port}: the kernel accepted a connection")

    def close(self) -> None:
        _close_all([*self._fillers, self._listen])
        self._fillers = []


class StallingProxy(_FaultServer):
    """A TCP proxy to ``target_host:target_port`` that can stop forwarding.

    The server's first packet (the MySQL greeting) is always forwarded.  After
    that nothing flows in either direction while the proxy is stalled; the
    data waits in the kernel buffers and flows again after ``resume()``.  With
    ``stall_after_greeting=True`` (the default) the proxy starts stalled, so a
    client gets the greeting and its auth reply is swallowed.  With
    ``False`` it forwards everything until ``stall()`` is called (a query then
    stalls mid-flight).  Sockets stay open until ``close()``.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        stall_after_greeting: bool = True,
        connect_timeout: float = 3.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.connect_timeout = connect_timeout
        self._listen = _listener(64)
        self.port = int(self._listen.getsockname()[1])
        self._stop = threading.Event()
        self._flowing = threading.Event()
        if not stall_after_greeting:
            self._flowing.set()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._greetings = 0
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"stalling-proxy-{self.port}", daemon=True
        )
        self._thread.start()

    # ---------------------------------------------------------------- switch

    def stall(self) -> None:
        """Stop forwarding in both directions (sockets stay open)."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again, including what waited while stalled."""
        self._flowing.set()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    @property
    def greetings_forwarded(self) -> int:
        with self._lock:
            return self._greetings

    # --------------------------------------------------------------- threads

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._listen], [], [], _TICK)
                if not ready:
                    continue
                client, _ = self._listen.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
            except OSError:
                client.close()
                continue
            client.setblocking(False)
            upstream.setblocking(False)
            thread = threading.Thread(
                target=self._forward,
                args=(client, upstream),
                name=f"stalling-proxy-{self.port}-conn",
                daemon=True,
            )
            with self._lock:
                if self._stop.is_set():
                    _close_all([client, upstream])
                    return
                self._socks += [client, upstream]
                self._threads.append(thread)
            thread.start()

    def _forward(self, client: socket.socket, upstream: socket.socket) -> None:
        greeting = bytearray()
        greeting_done = False
        try:
            while not self._stop.is_set():
                if not greeting_done:
                    readable = [upstream]
                elif self._flowing.is_set():
                    readable = [client, upstream]
                else:
                    self._flowing.wait(_TICK)
                    continue
                ready, _, _ = select.select(readable, [], [], _TICK)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return  # one side closed: stop forwarding (close() closes the sockets)
                    if not greeting_done:
                        greeting += data
                        if len(greeting) < 4:
                            continue
                        length = 4 + int.from_bytes(greeting[:3], "little")
                        if len(greeting) < length:
                            continue
                        self._send_all(client, bytes(greeting[:length]))
                        rest = bytes(greeting[length:])
                        greeting_done = True
                        with self._lock:
                            self._greetings += 1
                        if rest:  # rare: more than the greeting arrived at once
                            while not self._flowing.wait(_TICK):
                                if self._stop.is_set():
                                    return
                            self._send_all(client, rest)
                        continue
                    self._send_all(upstream if sock is client else client, data)
        except OSError:
            return

    def _send_all(self, sock: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            _, writable, _ = select.select([], [sock], [], _TICK)
            if writable:
                sent = sock.send(view)
                view = view[sent:]

    def close(self) -> None:
        self._stop.set()
        self._flowing.set()  # wake stalled connection threads
        self._thread.join(_JOIN_TIMEOUT)
        with self._lock:
            threads, self._threads = self._threads, []
            socks, self._socks = self._socks, []
        for thread in threads:
            thread.join(_JOIN_TIMEOUT)
        _close_all([*socks, self._listen])


class SwitchProxy(_FaultServer):
    """A TCP proxy to a real node that can turn, at once, into a server that never greets
    ("silent") or a blackhole (SYNs dropped), and back. In both fault modes the connections
    already open stop forwarding (a real dead peer does not answer either); when the fault
    ends, they are closed (the old peer is gone) and new connections are forwarded again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "forward"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._fillers: list[socket.socket] = []
        self._listen = _listener(128)
        self.port = int(self._listen.getsockname()[1])
        self._thread = threading.Thread(target=self._loop, name="switch-proxy", daemon=True)
        self._thread.start()

    def set_mode(self, mode: str) -> None:
        if mode not in ("forward", "silent", "blackhole"):
            raise ValueError(f"unknown mode {mode!r} (forward, silent, blackhole)")
        with self._lock:
            old, self.mode = self.mode, mode
            if old == mode:
                return
            if old == "blackhole":
                self._listen.listen(128)  # a listening socket takes a new backlog in place
                for filler in self._fillers:
                    filler.close()  # the loop accepts their (dead) peers and drops them
                self._fillers = []
            if mode == "forward":
                for client, upstream in self._pairs:
                    for sock in (client, upstream):
                        if sock is not None:
                            sock.close()
                self._pairs = []
            elif mode == "blackhole":
                # nothing accepts any more; a backlog of 0 filled by two connections makes
                # the kernel drop further SYNs (as Blackhole)
                self._listen.listen(0)
                for _ in range(2):
                    filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    filler.setblocking(False)
                    filler.connect_ex((HOST, self.port))
                    self._fillers.append(filler)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                mode = self.mode
                listen = self._listen
                pairs = list(self._pairs)
            readable: list[socket.socket] = []
            if mode != "blackhole":
                readable.append(listen)
            if mode == "forward":
                for client, upstream in pairs:
                    readable.append(client)
                    if upstream is not None:
                        readable.append(upstream)
            try:
                ready, _, _ = select.select(readable, [], [], 0.02)
            except (OSError, ValueError):
                continue  # a socket was closed by set_mode meanwhile
            with self._lock:
                if self.mode != mode:
                    continue
                for sock in ready:
                    self._handle(sock, mode)

    def _handle(self, sock: socket.socket, mode: str) -> None:
        if sock is self._listen:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            upstream: socket.socket | None = None
            if mode == "forward":
                try:
                    upstream = socket.create_connection(self.target, timeout=2)
                except OSError:
                    client.close()
                    return
            self._pairs.append((client, upstream))
            return
        for client, upstream in self._pairs:
            if sock is client or sock is upstream:
                other = upstream if sock is client else client
                try:
                    data = sock.recv(65536)
                    if data and other is not None:
                        other.sendall(data)
                        return
                except OSError:
                    pass
                client.close()
                if upstream is not None:
                    upstream.close()
                self._pairs.remove((client, upstream))
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            for client, upstream in self._pairs:
                client.close()
                if upstream is not None:
                    upstream.close()
            for sock in [*self._fillers, self._listen]:
                sock.close()
            self._pairs = []
            self._fillers = []
