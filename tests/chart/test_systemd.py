"""deploy/systemd: the hardened unit, its example config, sysusers.d/tmpfiles.d and the mariadb
drain drop-in.

Real tools throughout: `systemd-analyze verify` and `security --offline` on the units,
`systemd-sysusers` and `systemd-tmpfiles` applied to a temporary root, the drop-in's commands run
in the order systemd runs them at a fresh boot and at a stop, and the install and password
rotation lines of the unit's header run as written (paths mapped into the temporary root).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from galera_health.cli import build_parser
from galera_health.config import KEYS, raw_from_toml

from .helm import REPO

DEPLOY = REPO / "deploy" / "systemd"
UNIT = DEPLOY / "galera-health.service"
DROP_IN = DEPLOY / "mariadb.service.d" / "galera-health-drain.conf"
SYSUSERS = DEPLOY / "sysusers.d" / "galera-health.conf"
TMPFILES = DEPLOY / "tmpfiles.d" / "galera-health.conf"
AGENT_TOML = DEPLOY / "agent.toml"
INSTALLED = "/opt/galera-health/bin/galera-health"
STATE_DIR = "/run/galera-health"
PASSWORD_FILE = "/etc/galera-health/password"
MARIADB_UNITS = [
    Path("/lib/systemd/system/mariadb.service"),
    Path("/usr/lib/systemd/system/mariadb.service"),
]
PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


def required(message: str) -> None:
    """Under CI a missing tool is a failure (scripts/setup.sh --test installs it), else a skip."""
    if os.environ.get("CI") or os.environ.get("GALERA_TESTS_REQUIRE_SYSTEMD") == "1":
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:{PATH}")
    if found is None:
        required(f"{name} not installed (Debian package systemd; scripts/setup.sh --test)")
        raise AssertionError  # unreachable: required() raised
    return found


def mariadb_unit() -> Path:
    installed = next((u for u in MARIADB_UNITS if u.exists()), None)
    if installed is None:
        required("no mariadb.service here to attach the drop-in to (Debian mariadb-server)")
        raise AssertionError
    return installed


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


def exec_prefix(line: str) -> tuple[str, str]:
    """Split systemd's special executable prefixes (@ - : + ! !!) from the command line."""
    match = re.match(r"^([-@:+!]*)(.*)$", line)
    assert match
    return match.group(1), match.group(2)


def verify(*units: Path, unit_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": PATH}
    if unit_path is not None:
        env["SYSTEMD_UNIT_PATH"] = f"{unit_path}:"
    return subprocess.run(
        [tool("systemd-analyze"), "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def assert_verified(result: subprocess.CompletedProcess[str], *names: str) -> None:
    """verify's exit code catches fatal errors; unknown keys and the like are only warnings
    naming the file, so any line naming one of ours fails too."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for name in names:
        assert name not in output, output


def localized(path: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(path.read_text().replace(INSTALLED, local_agent()))
    return target


# --- systemd-analyze ------------------------------------------------------------------------


def test_units_and_drop_in_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    units = tmp_path / "units"
    agent = localized(UNIT, units / UNIT.name)
    shutil.copy(mariadb_unit(), units / "mariadb.service")
    localized(DROP_IN, units / "mariadb.service.d" / DROP_IN.name)
    result = verify(agent, units / "mariadb.service", unit_path=units)
    assert_verified(result, UNIT.name, DROP_IN.name)


@pytest.mark.parametrize(
    ("what", "old", "new"),
    [
        ("a relative ExecStart", "ExecStart=/", "ExecStart=bin/"),
        ("a misspelt key", "TimeoutStopSec=", "TimeoutStpoSec="),
        ("a misspelt drop-in key", "ExecStartPost=", "ExecStartPots="),
    ],
)
def test_systemd_analyze_verify_catches_a_broken_unit(
    tmp_path: Path, what: str, old: str, new: str
) -> None:
    """The check above can fail: the same units, each with one mistake, are rejected."""
    units = tmp_path / "units"
    agent = localized(UNIT, units / UNIT.name)
    shutil.copy(mariadb_unit(), units / "mariadb.service")
    drop_in = localized(DROP_IN, units / "mariadb.service.d" / DROP_IN.name)
    broken = agent if old in agent.read_text() else drop_in
    assert old in broken.read_text(), what
    broken.write_text(broken.read_text().replace(old, new, 1))
    result = verify(agent, units / "mariadb.service", unit_path=units)
    with pytest.raises(AssertionError):
        assert_verified(result, UNIT.name, DROP_IN.name)


def test_unit_hardening_exposure_is_low(tmp_path: Path) -> None:
    unit = localized(UNIT, tmp_path / UNIT.name)
    result = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


# --- what the unit says ---------------------------------------------------------------------


def test_unit_settings() -> None:
    unit = settings(UNIT)
    assert unit["User"] == ["galera-health"] and unit["Group"] == ["galera-health"]
    assert "DynamicUser" not in unit  # a dynamic uid cannot own a group-readable password file
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ProtectHome"] == ["yes"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["PrivateTmp"] == ["yes"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert unit["Restart"] == ["always"]
    # rotation: no copy taken at start; the agent reads the file itself at every reconnect
    assert "LoadCredential" not in unit and "SetCredential" not in unit
    assert int(unit["LimitNOFILE"][0]) >= 4096
    assert unit["SystemCallErrorNumber"] == ["EPERM"]
    # stop order: started before mariadb, so stopped AFTER it: 503 through MariaDB's whole drain
    assert "mariadb.service" in unit["Before"][0].split()
    assert all("mariadb" not in v for v in unit.get("After", []))
    for key in ("Requires", "Wants", "BindsTo", "Requisite", "PartOf"):
        assert all("mariadb" not in v for v in unit.get(key, [])), key
    # the stop timeout covers the drain
    config = raw_from_toml(str(AGENT_TOML))
    assert int(unit["TimeoutStopSec"][0]) > config["drain_seconds"] + 5
    # the state dir is tmpfiles.d's (boot), never a RuntimeDirectory tied to the agent's start
    assert config["state_dir"] == STATE_DIR and "RuntimeDirectory" not in unit
    assert config["password_file"] == PASSWORD_FILE and "password" not in config
    assert {"password_file", "state_dir", "drain_seconds"} <= set(KEYS)


def test_unit_command_lines_parse_with_the_agent_cli() -> None:
    unit = settings(UNIT)
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == INSTALLED
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"
    assert args.config == "/etc/galera-health/agent.toml"
    drop_in = settings(DROP_IN)
    commands = drop_in["ExecStop"] + drop_in["ExecStartPost"]
    for line in commands:
        prefix, command = exec_prefix(line)
        # "-": a failure of ours is logged and ignored, never fails mariadb's start or stop
        assert "-" in prefix, line
        argv = shlex.split(command)
        if argv[0] == INSTALLED:
            assert "+" in prefix, line  # root: only root writes the maintenance directory
            parsed = build_parser().parse_args(argv[1:])
            assert parsed.command == "maintenance" and parsed.state_dir == STATE_DIR
    assert exec_prefix(drop_in["ExecStop"][1])[1] == "/bin/sleep 15"


# --- a fresh boot, in a temporary root ------------------------------------------------------


def mapped(command: str, root: Path) -> list[str]:
    """A drop-in command as this machine runs it: the local agent, paths under the temp root."""
    argv = shlex.split(command.replace(INSTALLED, local_agent()))
    return [str(root) + a if a.startswith(("/run/", "/etc/")) else a for a in argv]


def run_as_mariadb_would(argv: list[str], umask: int) -> subprocess.CompletedProcess[str]:
    def child() -> None:
        os.umask(umask)

    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, preexec_fn=child
    )


def group_id(root: Path, name: str) -> int:
    for line in (root / "etc" / "group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"group {name} not in {root}/etc/group")


def user_id(root: Path, name: str) -> int:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"user {name} not in {root}/etc/passwd")


@pytest.fixture
def booted_root() -> Iterator[Path]:
    """A root after systemd's early boot: sysusers.d, then tmpfiles.d, applied by the real tools.
    Outside pytest's 0700 tmp dir, so that the agent's uid can reach the files in it."""
    root = Path(tempfile.mkdtemp(prefix="galera-health-root-"))
    root.chmod(0o755)
    (root / "etc").mkdir()
    subprocess.run(
        [tool("systemd-sysusers"), f"--root={root}", str(SYSUSERS)], check=True, timeout=60
    )
    assert not (root / "run" / "galera-health").exists()  # a fresh boot: /run is empty
    subprocess.run(
        [tool("systemd-tmpfiles"), "--create", f"--root={root}", str(TMPFILES)],
        check=True,
        timeout=60,
    )
    try:
        yield root
    finally:
        shutil.rmtree(root)


def mariadb_umask() -> int:
    value = settings(mariadb_unit()).get("UMask", ["0022"])[0]
    return int(value, 8)


def test_fresh_boot_drop_in_commands_succeed_in_systemd_order(booted_root: Path) -> None:
    root = booted_root
    state = root / STATE_DIR.lstrip("/")
    gid = group_id(root, "galera-health")
    info = state.stat()
    assert info.st_uid == 0 and info.st_gid == gid
    assert stat.S_IMODE(info.st_mode) == 0o2750  # root writes, the agent's group reads
    drop_in = settings(DROP_IN)
    umask = mariadb_umask()
    # start: mariadbd is up (Type=notify), then ExecStartPost; nothing of ours may fail it
    for line in drop_in["ExecStartPost"]:
        result = run_as_mariadb_would(mapped(exec_prefix(line)[1], root), umask)
        assert result.returncode == 0, (line, result.stdout, result.stderr)
    # stop: ExecStop in order, then SIGTERM to mariadbd
    stop_lines = drop_in["ExecStop"]
    for line in stop_lines:
        argv = mapped(exec_prefix(line)[1], root)
        if argv[0] == "/bin/sleep":
            argv = [argv[0], "0"]  # the real sleep binary; its 15 s are checked above
        result = run_as_mariadb_would(argv, umask)
        assert result.returncode == 0, (line, result.stdout, result.stderr)
    written = state / "maintenance"
    info = written.stat()
    # under mariadb.service's UMask the file is still readable by the agent, through its group
    assert info.st_gid == gid and info.st_mode & stat.S_IRGRP, oct(info.st_mode)
    assert "mariadb.service stopping" in written.read_text()
    # the next start clears it again
    (line,) = drop_in["ExecStartPost"]
    assert run_as_mariadb_would(mapped(exec_prefix(line)[1], root), umask).returncode == 0
    assert not written.exists()


def test_without_the_directory_our_commands_fail_and_the_prefix_keeps_mariadb_up(
    tmp_path: Path,
) -> None:
    """Why the "-": with no /run/galera-health (tmpfiles.d not installed) the CLI fails."""
    drop_in = settings(DROP_IN)
    (line,) = drop_in["ExecStartPost"]
    prefix, command = exec_prefix(line)
    result = run_as_mariadb_would(mapped(command, tmp_path), 0o007)
    assert result.returncode != 0 and "not a directory" in result.stderr
    assert "-" in prefix


def header_commands(prefix: str) -> list[str]:
    lines = UNIT.read_text().split("[Unit]")[0].splitlines()
    joined: list[str] = []
    for line in lines:
        text = line.removeprefix("#").strip()
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + text
        elif text.startswith(prefix):
            joined.append(text)
    return joined


def test_install_and_rotation_lines_give_a_password_the_agent_user_reads(
    booted_root: Path,
) -> None:
    """The header's install lines (with -D) and its rotation lines, run as written in a temp
    root; then the agent's own password reader, as the agent's uid/gid, sees each password."""
    root = booted_root
    uid, gid = user_id(root, "galera-health"), group_id(root, "galera-health")

    def run(line: str, stdin: str | None = None) -> None:
        command = line.replace("-g galera-health", f"-g {gid}").split(" <<< ")[0]
        command = re.sub(r"(?<![\w.])/etc/", f"{root}/etc/", command)
        result = subprocess.run(
            [
                "bash",
                "-c",
                command.replace(" sysusers.d/", f" {DEPLOY}/sysusers.d/")
                .replace(" tmpfiles.d/", f" {DEPLOY}/tmpfiles.d/")
                .replace(" agent.toml ", f" {AGENT_TOML} ")
                .replace(" galera-health.service ", f" {UNIT} ")
                .replace(" mariadb.service.d/", f" {DEPLOY}/mariadb.service.d/"),
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, (command, result.stderr)

    installs = header_commands("install ")
    assert len(installs) >= 5 and all(" -D " in c or " -m " in c for c in installs)
    for line in installs:
        if "/dev/stdin" in line:
            assert "/password" in line
            if "password.new" in line:
                continue
            run(line, "first-password\n")
        else:
            assert " -D " in line, line  # /etc/galera-health etc. need not exist yet
            run(line)
    password = root / PASSWORD_FILE.lstrip("/")
    info = password.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_uid == 0 and info.st_gid == gid
    assert (root / "etc/systemd/system/mariadb.service.d" / DROP_IN.name).exists()

    def read_as_agent() -> str:
        code = (
            "from galera_health.config import Credentials; import sys; "
            "print(Credentials('health', password_file=sys.argv[1]).password())"
        )
        result = subprocess.run(
            [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                sys.executable,
                "-c",
                code,
                str(password),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert read_as_agent() == "first-password"
    rotation = [c for c in header_commands("install ") if "password.new" in c]
    rotation += header_commands("mv ")
    assert len(rotation) == 2
    run(rotation[0], "second-password\n")
    run(rotation[1])
    assert read_as_agent() == "second-password"  # the same reader the agent calls per reconnect
    assert stat.S_IMODE(password.stat().st_mode) == 0o640


def read_as(uid: int, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "cat", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_datadir_acls_let_the_agent_read_the_galera_state_files_and_nothing_below() -> None:
    """tmpfiles.d's ACLs, applied by the real systemd-tmpfiles to a root with a datadir like
    Debian's (0755, files 0660 of another user): the agent's user reads grastate.dat and the
    files MariaDB creates at the top later (wsrep-recover.log), never a database directory's.
    (systemd-tmpfiles resolves ACL user names with the host's NSS, so the test names the
    agent's uid from the root's sysusers.d.)"""
    root = Path(tempfile.mkdtemp(prefix="galera-health-acl-"))
    try:
        root.chmod(0o755)
        (root / "etc").mkdir()
        subprocess.run([tool("systemd-sysusers"), f"--root={root}", str(SYSUSERS)], check=True)
        uid = user_id(root, "galera-health")
        datadir = root / "var" / "lib" / "mysql"
        datadir.mkdir(parents=True)
        for part in (root / "var", root / "var" / "lib", datadir):
            part.chmod(0o755)
        grastate = datadir / "grastate.dat"
        grastate.write_text("seqno: 5\n")
        grastate.chmod(0o660)
        assert read_as(uid, grastate).returncode != 0  # before: not the agent's
        config = root / "tmpfiles.conf"
        config.write_text(TMPFILES.read_text().replace("u:galera-health:", f"u:{uid}:"))
        subprocess.run(
            [tool("systemd-tmpfiles"), "--create", f"--root={root}", str(config)], check=True
        )
        assert read_as(uid, grastate).stdout == "seqno: 5\n"
        log = datadir / "wsrep-recover.log"  # created later, the way mariadbd creates files
        fd = os.open(log, os.O_CREAT | os.O_WRONLY, 0o660)
        os.write(fd, b"WSREP: Recovered position: x\n")
        os.close(fd)
        assert "Recovered position" in read_as(uid, log).stdout
        database = datadir / "shop"
        database.mkdir(mode=0o700)
        (database / "orders.ibd").write_text("rows")
        assert read_as(uid, database / "orders.ibd").returncode != 0
    finally:
        shutil.rmtree(root, ignore_errors=True)
