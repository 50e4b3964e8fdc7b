"""HAProxy's agent-check protocol: an optional TCP listener (`agent_check_listen`) that answers
one line from the cached verdict and closes.

HAProxy connects every `agent-inter`, may send its `agent-send` text, and reads one ASCII line
of words. This listener writes, at once on accept and never waiting for the client:

- `up ready` when every watched node is usable (`up` undoes an earlier `down`, `ready` an
  earlier `drain`: only the agent may revert its own answers);
- `drain #<reason>` when the only reason is the agent's own maintenance or drain: HAProxy sends
  no new sessions but keeps the established ones, the graceful path a 503 cannot give;
- `down #<reason>` otherwise (a fault, stale, starting: fail closed).

Several watched nodes are judged like /health: `up` only when all are usable, `down` as soon
as one has a fault. The line is the same for every client: what the checker sends is never
read as a command, only read and thrown away (at most READ_LIMIT bytes, for at most LINGER
seconds after the answer) so that closing the socket is a FIN and not a reset that could
discard the answer on the checker's side. Each connection costs no thread; there are at most
MAX_CONNECTIONS at once (more are answered and closed at once), and none lives longer than
LINGER. The HTTP side, not the MySQL side: it only reads the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

from .store import NodeView, VerdictStore
from .verdict import State

# the agent holds the node out on purpose
HELD_OUT: frozenset[State] = frozenset({"maintenance", "draining"})
MAX_REASON = 200  # characters after '#': HAProxy shows it in its stats ("last_agt")
READ_LIMIT = 1024  # bytes of the checker's input read and discarded per connection
LINGER = 1.0  # seconds a connection may stay open after the answer, waiting for the close
MAX_CONNECTIONS = 256


def ascii_reason(text: str) -> str:
    """One line of printable ASCII for after the '#': HAProxy reads up to the first CR/LF, and
    a reason must not be able to end the line early or add words."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text)
    return clean if len(clean) <= MAX_REASON else clean[: MAX_REASON - 3] + "..."


def agent_reply(views: list[NodeView]) -> str:
    """The agent-check line for these nodes (all the watched ones), with its newline."""
    bad = [v for v in views if not v.healthy]
    if not bad:
        return "up ready\n"
    faults = [v for v in bad if v.state not in HELD_OUT]
    word = "down" if faults else "drain"
    reason = "; ".join(f"{v.node}: {v.reason}" for v in (faults or bad))
    return f"{word} #{ascii_reason(reason)}\n"


class AgentCheckServer:
    """The listener: bound at construction (a port in use is reported at start, like `listen`),
    served by `run()` in a thread of its own (one asyncio loop), stopped by `close()`."""

    def __init__(
        self,
        store: VerdictStore,
        host: str,
        port: int,
        *,
        linger: float = LINGER,
        read_limit: int = READ_LIMIT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.store = store
        self.linger = linger
        self.read_limit = read_limit
        self.max_connections = max_connections
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=1024)
        self.socket.setblocking(False)
        self.address: tuple[str, int] = self.socket.getsockname()[:2]
        self.active = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve in a daemon thread; returns once the loop accepts."""
        self._thread = threading.Thread(target=self.run, name="agent-check", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(
            self._answer, sock=self.socket, limit=self.read_limit + 1
        )
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=self.linger + 5)
        self.socket.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(agent_reply(self.store.views()).encode("ascii"))
            if self.active >= self.max_connections:
                return  # answered; no lingering for connections beyond the bound
            self.active += 1
            try:
                writer.write_eof()
                await asyncio.wait_for(self._discard(reader), self.linger)
            finally:
                self.active -= 1
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    async def _discard(self, reader: asyncio.StreamReader) -> None:
        """Read what the checker sends until it closes, at most read_limit bytes: never parsed."""
        received = 0
        while received <= self.read_limit:
            chunk = await reader.read(self.read_limit + 1 - received)
            if not chunk:
                return
            received += len(chunk)
