"""What a newcomer reads first: --help, the start line, and the one-line errors of a first try."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from galera_health.cli import build_parser, main
from galera_health.config import DEFAULT_INTERVAL
from galera_health.testbed import free_ports

README = Path(__file__).resolve().parents[2] / "README.md"


def help_text(command: str) -> str:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return subparsers.choices[command].format_help()  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", ["serve", "check"])
def test_help_says_the_default_port_and_points_to_readme_sections_that_exist(command: str) -> None:
    text = help_text(command)
    assert "without :PORT the port is 3306" in " ".join(text.split())
    headings = {
        line.lstrip("#").strip() for line in README.read_text().splitlines() if line[:1] == "#"
    }
    pointers = re.findall(r"see README: ([^)]+)\)", text)
    assert pointers
    for section in pointers:
        assert section in headings, (section, sorted(headings))


def test_a_bare_port_as_listen_says_the_host_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--node", "n1=127.0.0.1:1", "--user", "u", "--listen", "9290"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "'9290' has no host" in err and "0.0.0.0:9290" in err and "no port" not in err


def test_a_misspelt_key_gets_the_near_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('user = "u"\nintervall = 2\n[nodes]\nn1 = "127.0.0.1:1"\n')
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        f"unknown key 'intervall' in config file {str(config)!r}; did you mean interval?"
    )
    config.write_text('user = "u"\nzzz = 2\n[nodes]\nn1 = "127.0.0.1:1"\n')
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key 'zzz'" in err and "README.md (Configuration)" in err
    assert "interval" not in err  # not every key spelt out


def free_port() -> int:
    return free_ports(1)[0]


def start_lines(*flags: str) -> list[str]:
    """Runs `serve` against a refused node until its start line, then stops it (SIGINT)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "galera_health", "serve", "--node", "n1=127.0.0.1:1",
         "--node", "n2=127.0.0.1:2", "--user", "health", "--listen",
         f"127.0.0.1:{free_port()}", *flags],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if "serving on" in line:
                break
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return lines


def test_the_start_line_is_short_and_the_full_config_is_at_debug() -> None:
    lines = start_lines()
    start = next(line for line in lines if "serving on" in line)
    assert "nodes n1=127.0.0.1:1, n2=127.0.0.1:2; user health (password from none)" in start
    assert "full config at log_level debug and in /status" in start
    assert len(start) < 250, start
    assert not [line for line in lines if "effective config" in line]

    lines = start_lines("--log-level", "debug")
    full = next(line for line in lines if "effective config: " in line)
    config = json.loads(full.split("effective config: ", 1)[1])
    assert config["policy"]["rise"] == 1 and config["interval_seconds"] == DEFAULT_INTERVAL


def test_the_json_start_line_carries_the_short_config() -> None:
    records = [json.loads(line) for line in start_lines("--log-format", "json")]
    start = next(r for r in records if r.get("event") == "start")
    assert start["config"] == {
        "nodes": {"n1": "127.0.0.1:1", "n2": "127.0.0.1:2"},
        "user": "health",
        "password_source": "none",
        "listen": start["config"]["listen"],
    }
    assert not [r for r in records if r.get("event") == "config"]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["writer", "handover", "--to", "n2", "--node", "n1=127.0.0.1:1", "--user", "u"],
         "galera-health: error: these settings have writer off; give the agent's config "
         "(writer = true)"),
        (["writer", "handover", "--to", "n2", "--node", "n1=127.0.0.1:1", "--user", "u",
          "--writer"],
         "galera-health: error: node 'n2' is not in these settings' nodes (n1); run it beside "
         "the agent that watches it, with its config"),
        (["writer", "handover", "--to", "n1", "--timeout", "0", "--node", "n1=127.0.0.1:1",
          "--user", "u", "--writer"],
         "galera-health: error: --timeout must be a positive number of seconds"),
    ],
)  # fmt: skip
def test_writer_usage_errors_are_one_line_and_exit_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == line


def test_writer_handover_needs_to(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["writer", "handover", "--node", "n1=127.0.0.1:1", "--user", "u", "--writer"])
    assert exited.value.code == 2
    assert "the following arguments are required: --to" in capsys.readouterr().err


def test_writer_handover_with_no_agent_to_ask_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_ports(1)[0]
    argv = ["writer", "handover", "--to", "n1", "--node", "n1=127.0.0.1:1", "--user", "u"]
    assert main([*argv, "--writer", "--listen", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"galera-health: cannot reach the agent at 127.0.0.1:{port}/health/n1")
    assert len(err.splitlines()) == 1
