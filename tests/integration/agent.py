"""Run the real agent as a separate process and talk to it over HTTP, as the LB does."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from galera_health.testbed import free_ports


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    seconds: float
    headers: dict[str, str]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`galera-health ARGS` as a user would run it: exit code, stdout, stderr."""
    return subprocess.run(
        [sys.executable, "-m", "galera_health", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


class AgentProcess:
    def __init__(
        self,
        nodes: Sequence[str],
        user: str,
        password_file: str | None,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_ports(1)[0]
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the agent
            prefix="galera-health-agent-", suffix=".log", delete=False
        )
        self._final_output: str | None = None
        command = [
            sys.executable,
            "-m",
            "galera_health",
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
        ]
        for node in nodes:
            command += ["--node", node]
        command += ["--user", user]
        if password_file is not None:
            command += ["--password-file", password_file]
        command += list(extra)
        self.command = command
        self.process = subprocess.Popen(
            command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.wait_for(lambda a: a.status in (200, 503), "/livez", timeout=15)

    @property
    def pid(self) -> int:
        return self.process.pid

    def get(self, path: str = "/health", timeout: float = 5.0, method: str = "GET") -> Answer:
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            body = response.read().decode()
            headers = {k.lower(): v for k, v in response.getheaders()}
            return Answer(response.status, body, time.monotonic() - started, headers)
        except OSError:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"agent exited ({self.process.returncode}):\n{self.output()}"
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
            f"no matching answer on {path} within {timeout} s; last: {answer}\n{self.output()}"
        )

    def threads(self) -> int:
        with open(f"/proc/{self.pid}/status") as handle:
            for line in handle:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        raise AssertionError("no Threads line")

    def tcp_connections_to(self, port: int) -> int:
        """Established or connecting TCP sockets of the agent process to a port (ss -p)."""
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

    def stop(self) -> int:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        if self._final_output is None:
            self._final_output = self.output()
            self.log.close()
            os.unlink(self.log.name)
        return self.process.returncode

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
