"""Run the real agent (or another HTTP server) as a separate process and talk to it over HTTP,
as the LB does. Used by the integration tests and the benchmarks alike.

Everything started here is stopped by PID: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from galera_health.testbed import free_ports

__all__ = ["SHORT_DRAIN", "AgentProcess", "Answer", "ServerProcess", "run_cli"]

# Seconds an agent drains on SIGTERM unless a test is about draining: stops do not wait out the
# production default (11 s), yet still go through the drain and its exit 0.
SHORT_DRAIN = 0.2


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no answer (refused, reset, timed out)
    body: str
    seconds: float
    headers: dict[str, str]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`galera-health ARGS` as a user would run it: exit code, stdout, stderr."""
    return subprocess.run(
        [sys.executable, "-m", "galera_health", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


def terminate(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; by PID only, and only a process we started.
    Returns once it has exited (reaped)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=15)


class ServerProcess:
    """An HTTP server process on 127.0.0.1:port, its output in a temporary log file."""

    def __init__(
        self,
        command: Sequence[str],
        port: int,
        *,
        name: str = "server",
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.command = list(command)
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
            prefix=f"galera-health-{name}-", suffix=".log", delete=False
        )
        self._final_output: str | None = None
        self.process = subprocess.Popen(
            self.command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str = "/health") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str = "/health", timeout: float = 5.0, method: str = "GET") -> Answer:
        """One request on a fresh connection; status 0 when nothing answered."""
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            body = response.read().decode("utf-8", "replace")
            headers = {k.lower(): v for k, v in response.getheaders()}
            return Answer(response.status, body, time.monotonic() - started, headers)
        except (OSError, http.client.HTTPException):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}):\n{self.output()}"
                ) from None
            return Answer(0, "", time.monotonic() - started, {})
        finally:
            connection.close()

    def status(self) -> dict[str, Any]:
        answer = self.get("/status")
        assert answer.status == 200, answer
        document: dict[str, Any] = json.loads(answer.body)
        return document

    def wait_for(
        self,
        predicate: Callable[[Answer], bool],
        path: str = "/health",
        timeout: float = 30.0,
        interval: float = 0.05,
    ) -> tuple[float, Answer]:
        """Seconds until predicate(answer) first holds; fails with the last answer otherwise."""
        started = time.monotonic()
        answer = Answer(0, "", 0.0, {})
        while time.monotonic() - started < timeout:
            answer = self.get(path)
            if predicate(answer):
                return time.monotonic() - started, answer
            time.sleep(interval)
        raise AssertionError(
            f"{self.name}: no matching answer on {path} within {timeout} s; last: {answer}\n"
            f"{self.output()}"
        )

    def threads(self) -> int:
        with open(f"/proc/{self.pid}/status") as handle:
            for line in handle:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        raise AssertionError("no Threads line")

    def tcp_connections_to(self, port: int) -> int:
        """Established or connecting TCP sockets of the process to a port (ss -p)."""
        out = subprocess.run(
            ["ss", "-Htnp", "state", "all", f"( dport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return sum(
            1
            for line in out.splitlines()
            if f"pid={self.pid}," in line and not line.startswith(("TIME-WAIT", "CLOSE-WAIT"))
        )

    def output(self) -> str:
        if self._final_output is not None:
            return self._final_output
        with open(self.log.name, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM, SIGKILL after `grace` seconds; the exit code. The log file is removed."""
        terminate(self.process, grace)
        if self._final_output is None:
            self._final_output = self.output()
            self.log.close()
            with contextlib.suppress(OSError):
                os.unlink(self.log.name)
        return self.process.returncode

    def kill(self) -> int:
        """SIGKILL (for a server whose threads hang, like the naive checker on a frozen node)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
        return self.stop()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class AgentProcess(ServerProcess):
    """`galera-health serve` on a free loopback port; returns once /livez answers.

    `drain_seconds` (SHORT_DRAIN unless a test is about draining; None: the agent's own
    setting) comes before `extra`, so a `--drain-seconds` in `extra` wins.
    """

    def __init__(
        self,
        nodes: Sequence[str],
        user: str,
        password_file: str | None,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
        *,
        drain_seconds: float | None = SHORT_DRAIN,
        prefix: Sequence[str] = (),
        module: Sequence[str] = ("-m", "galera_health"),
        name: str = "agent",
        ready_timeout: float = 15.0,
    ) -> None:
        port = free_ports(1)[0]
        command = [*prefix, sys.executable, *module, "serve", "--listen", f"127.0.0.1:{port}"]
        for node in nodes:
            command += ["--node", node]
        command += ["--user", user]
        if password_file is not None:
            command += ["--password-file", password_file]
        if drain_seconds is not None:
            command += ["--drain-seconds", f"{drain_seconds:g}"]
        command += list(extra)
        super().__init__(command, port, name=name, env=env)
        try:
            self.wait_for(lambda a: a.status in (200, 503), "/livez", timeout=ready_timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, grace: float = 15.0, drain_wait: float = 3.0) -> int:
        """SIGTERM (the drain), then after `drain_wait` seconds SIGINT, which ends a drain at
        once (exit 0): tests about draining send their own SIGTERM and wait for the exit; no
        other test waits out an agent's drain (a config file may set the production 11 s)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=drain_wait)
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGINT)
        return super().stop(grace)

    def __enter__(self) -> AgentProcess:
        return self


def stop_all(agents: Iterable[AgentProcess]) -> None:
    """Stop several agents at once: each stop may wait out `drain_wait` (an agent at the
    production drain), so one after another would add those waits up."""
    running = list(agents)
    if running:
        with ThreadPoolExecutor(max_workers=len(running)) as pool:
            list(pool.map(lambda agent: agent.stop(), running))
