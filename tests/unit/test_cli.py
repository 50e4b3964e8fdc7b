"""What a newcomer reads first: --help, the start line, and the one-line errors of a first try."""

from __future__ import annotations

import json
import os
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


def test_the_start_line_is_short_and_the_full_config_is_not_at_info() -> None:
    lines = start_lines()
    start = next(line for line in lines if "serving on" in line)
    assert "nodes n1=127.0.0.1:1, n2=127.0.0.1:2; user health (password from none)" in start
    assert "full config at log_level debug and in /status" in start
    assert len(start) < 250, start
    assert not [line for line in lines if "effective config" in line]


def test_the_json_start_line_carries_the_short_config_and_debug_the_full_one() -> None:
    """One process for both (each start costs a second): the JSON records at log_level debug."""
    records = [
        json.loads(line) for line in start_lines("--log-format", "json", "--log-level", "debug")
    ]
    start = next(r for r in records if r.get("event") == "start")
    assert start["config"] == {
        "nodes": {"n1": "127.0.0.1:1", "n2": "127.0.0.1:2"},
        "user": "health",
        "password_source": "none",
        "listen": start["config"]["listen"],
    }
    full = next(r for r in records if r.get("event") == "config")
    assert json.loads(full["message"].split("effective config: ", 1)[1]) == full["config"]
    assert full["config"]["policy"]["rise"] == 1
    assert full["config"]["interval_seconds"] == DEFAULT_INTERVAL


SHIPPED_CONFIG = README.parent / "deploy" / "systemd" / "agent.toml"


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """A usage error: exit 2 and one line on stderr, whether argparse or we found it."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert code == 2, captured
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err.strip()


@pytest.mark.parametrize(
    ("argv", "unknown"),
    [
        (["serve", "--node", "n1=127.0.0.1:1", "--user", "u", "--password", "x"], "--password"),
        (["check", "--node", "n1=127.0.0.1:1", "--user", "u", "--password", "x"], "--password"),
        (["serve", "--node", "n1=127.0.0.1:1", "--user", "u", "--inter", "1"], "--inter"),
        (["maintenance", "status", "--state", "/tmp"], "--state"),
        (["demo", "--si=5"], "--si=5"),
    ],
)
def test_abbreviations_are_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], unknown: str
) -> None:
    """`--password x` must not silently become `--password-file x` (argparse's default)."""
    err = one_line_error(capsys, argv)
    assert err.startswith("galera-health") and f"unrecognized arguments: {unknown}" in err
    if unknown == "--password":
        assert "a password is never a flag: use --password-file or GALERA_HEALTH_PASSWORD" in err


@pytest.mark.parametrize("command", ["serve", "check"])
def test_help_names_the_password_variable(command: str) -> None:
    assert "GALERA_HEALTH_PASSWORD" in help_text(command)


def test_status_token_help_says_what_needs_the_token_as_the_readme_and_web_do() -> None:
    from galera_health.web import PROBE_PATHS

    text = " ".join(help_text("serve").split())
    said = "require this bearer token for /status and /metrics; the probes and the page at / never"
    assert said in text
    row = next(line for line in README.read_text().splitlines() if "| `status_token_file`" in line)
    assert "`/status` and `/metrics`" in row and "`/` included, never need it" in row
    assert "/" in PROBE_PATHS  # web.py: the probe paths (/ among them) skip the token check


def test_check_help_lists_only_what_check_uses() -> None:
    """One poll: no schedule (interval, backoff), no history (rise, fall, hold-down), no
    listener, no maintenance files."""
    flags = set(re.findall(r"--[a-z-]+", help_text("check")))
    for unused in ("--interval", "--backoff-max", "--hold-down", "--rise", "--fall",
                   "--fall-timeout", "--fall-agent-error", "--listen", "--state-dir",
                   "--status-token-file", "--writer"):  # fmt: skip
        assert unused not in flags, unused
    assert {"--node", "--user", "--password-file", "--connect-timeout", "--ssl-ca"} <= flags


def test_check_warns_about_a_password_file_every_user_can_read(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("pw\n")
    secret.chmod(0o644)
    node = f"n1=127.0.0.1:{free_port()}"  # nothing listens: refused at once
    done = subprocess.run(
        [sys.executable, "-m", "galera_health", "check", "--node", node, "--user", "u",
         "--password-file", str(secret)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done
    assert f"password_file {secret} is readable by every user (mode 644); chmod 600 it" in (
        done.stderr
    )
    secret.chmod(0o600)
    done = subprocess.run(
        [sys.executable, "-m", "galera_health", "check", "--node", node, "--user", "u",
         "--password-file", str(secret)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "readable by every user" not in done.stderr


def test_demo_fault_help_lists_every_fault() -> None:
    from galera_health.demo import FAULTS

    parser = build_parser()
    demo = next(a for a in parser._actions if a.dest == "command").choices["demo"]  # type: ignore[attr-defined]
    fault = next(a for a in demo._actions if a.dest == "demo_command").choices["fault"]
    text = fault.format_help()
    for name, (what, _) in FAULTS.items():
        assert f"  {name:9} {what}" in text, name
    assert "readonly" in text and "writable" in text


# ------------------------------------------------------------------ maintenance on|off|status


def maintenance_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:  # fmt: skip
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    code = main(["maintenance", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_maintenance_refuses_a_node_the_agent_does_not_watch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Today's bug: `--node bogus` wrote maintenance.bogus, which no agent reads, and exit 0.
    The node list and the state_dir are the agent's: its --config, GALERA_HEALTH_STATE_DIR."""
    env = {"GALERA_HEALTH_STATE_DIR": str(tmp_path)}
    config = str(SHIPPED_CONFIG)
    code, out, err = maintenance_cli(
        monkeypatch, capsys, "on", "--node", "bogus", "--config", config, env=env
    )
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert f"the agent has no node 'bogus' (nodes in config file {config!r}: db)" in err
    assert os.listdir(tmp_path) == []

    code, out, err = maintenance_cli(
        monkeypatch, capsys, "on", "--node", "db", "--config", config, "--reason", "kernel"
    )
    assert (code, err) == (0, ""), err
    assert os.listdir(tmp_path) == ["maintenance.db"]
    (tmp_path / "maintenance.old").write_text("left behind")
    code, out, _ = maintenance_cli(monkeypatch, capsys, "status", "--config", config)
    assert code == 0
    assert "maintenance.db: maintenance (kernel (set by " in out
    assert "maintenance.old: maintenance (left behind; by " in out
    assert "(no node of the agent has this name: no effect)" in out.splitlines()[1]
    code, out, _ = maintenance_cli(monkeypatch, capsys, "off", "--node", "db", "--config", config)
    assert code == 0 and not (tmp_path / "maintenance.db").exists()


def test_maintenance_with_a_node_but_no_node_list_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GALERA_HEALTH_CONFIG", raising=False)
    monkeypatch.delenv("GALERA_HEALTH_NODES", raising=False)
    code, _, err = maintenance_cli(
        monkeypatch, capsys, "on", "--node", "db1", "--state-dir", str(tmp_path)
    )
    assert code == 2 and len(err.splitlines()) == 1 and "give --config FILE" in err
    assert os.listdir(tmp_path) == []
    # GALERA_HEALTH_NODES is the agent's list too (as the agent reads it)
    code, _, err = maintenance_cli(
        monkeypatch, capsys, "on", "--node", "db1", "--state-dir", str(tmp_path),
        env={"GALERA_HEALTH_NODES": "db1=/run/mysqld/mysqld.sock"},
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert os.listdir(tmp_path) == ["maintenance.db1"]
    # every node of the agent needs no list
    code, _, err = maintenance_cli(monkeypatch, capsys, "on", "--state-dir", str(tmp_path))
    assert (code, err) == (0, "")
    assert sorted(os.listdir(tmp_path)) == ["maintenance", "maintenance.db1"]


def test_maintenance_state_dir_layers_as_the_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--state-dir over GALERA_HEALTH_STATE_DIR over the file's state_dir, as for the agent."""
    from_file, from_env, from_flag = (tmp_path / d for d in ("file", "env", "flag"))
    for directory in (from_file, from_env, from_flag):
        directory.mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{from_file}"\n[nodes]\ndb = "/run/mysqld/mysqld.sock"\n')
    monkeypatch.setenv("GALERA_HEALTH_CONFIG", str(config))
    assert maintenance_cli(monkeypatch, capsys, "on")[0] == 0
    env = {"GALERA_HEALTH_STATE_DIR": str(from_env)}
    assert maintenance_cli(monkeypatch, capsys, "on", env=env)[0] == 0
    assert maintenance_cli(monkeypatch, capsys, "on", "--state-dir", str(from_flag))[0] == 0
    assert [os.listdir(d) for d in (from_file, from_env, from_flag)] == [["maintenance"]] * 3
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
