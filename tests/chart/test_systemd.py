"""deploy/systemd: the hardened unit, its example config and the mariadb drain drop-in.

`systemd-analyze verify` checks them where systemd-analyze exists (Debian 12 ships it with the
systemd package); the unit's command lines are parsed by the agent's own argument parser.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from galera_health.cli import build_parser
from galera_health.config import raw_from_toml

from .helm import REPO

DEPLOY = REPO / "deploy" / "systemd"
UNIT = DEPLOY / "galera-health.service"
DROP_IN = DEPLOY / "mariadb.service.d" / "galera-health-drain.conf"
INSTALLED = "/opt/galera-health/bin/galera-health"
MARIADB_UNITS = [
    Path("/lib/systemd/system/mariadb.service"),
    Path("/usr/lib/systemd/system/mariadb.service"),
]


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd); unit not verified")
    return found


def local_agent() -> str:
    """The agent's console script in this environment, standing in for /opt/galera-health's."""
    script = Path(sys.executable).parent / "galera-health"
    assert script.exists(), script
    return str(script)


def settings(path: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED, local_agent()))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert UNIT.name not in result.stdout + result.stderr, result.stderr  # no warning about it


def test_unit_hardening_exposure_is_low(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED, local_agent()))
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no security --offline (systemd < 252)")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_unit_settings() -> None:
    unit = settings(UNIT)
    assert unit["DynamicUser"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ProtectHome"] == ["yes"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["PrivateTmp"] == ["yes"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert unit["Restart"] == ["always"]
    assert unit["LoadCredential"] == ["password:/etc/galera-health/password"]
    # the agent raises RLIMIT_NOFILE to 4096 unless it has it; a filtered call must not kill it
    assert int(unit["LimitNOFILE"][0]) >= 4096
    assert unit["SystemCallErrorNumber"] == ["EPERM"]
    # stopped before mariadb (After= reverses on stop), so the agent drains while mariadbd serves
    assert "mariadb.service" in unit["After"][0].split()
    # the stop timeout covers the drain
    config = raw_from_toml(str(DEPLOY / "agent.toml"))
    assert int(unit["TimeoutStopSec"][0]) > config["drain_seconds"] + 5
    assert config["state_dir"] == "/run/galera-health" and unit["RuntimeDirectory"] == [
        "galera-health"
    ]
    assert "password" not in config


def test_unit_command_lines_parse_with_the_agent_cli() -> None:
    unit = settings(UNIT)
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == INSTALLED
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"
    assert args.config == "/etc/galera-health/agent.toml"
    assert args.password_file == "%d/password"  # systemd's credentials directory
    drop_in = settings(DROP_IN)
    for line in drop_in["ExecStop"][:1] + drop_in["ExecStartPost"]:
        argv = shlex.split(line.lstrip("+"))
        assert argv[0] == INSTALLED
        parsed = build_parser().parse_args(argv[1:])
        assert parsed.command == "maintenance" and parsed.state_dir == "/run/galera-health"
    assert drop_in["ExecStop"][1] == "/bin/sleep 15"


def test_mariadb_drop_in_passes_verify(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    installed = next((u for u in MARIADB_UNITS if u.exists()), None)
    if installed is None:
        pytest.skip("no mariadb.service here to attach the drop-in to")
    units = tmp_path / "units"
    (units / "mariadb.service.d").mkdir(parents=True)
    shutil.copy(installed, units / "mariadb.service")
    (units / "mariadb.service.d" / DROP_IN.name).write_text(
        DROP_IN.read_text().replace(INSTALLED, local_agent())
    )
    result = subprocess.run(
        [analyze, "verify", str(units / "mariadb.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"SYSTEMD_UNIT_PATH": f"{units}:", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    assert result.returncode == 0, result.stderr
    assert DROP_IN.name not in result.stdout + result.stderr, result.stderr
