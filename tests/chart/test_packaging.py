"""Wheel and sdist from the standard build backend, and the Dockerfile's own install steps.

No container engine here: the test runs the Dockerfile's two pip commands itself (read from the
Dockerfile, so they cannot drift apart), in a fresh virtualenv, and starts the installed agent.
Needs PyPI (or a pip cache) for the build environment and the dependencies' wheels.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from galera_health import __version__
from galera_health.testbed import free_ports

from .helm import REPO

DOCKERFILE = REPO / "Dockerfile"
NOT_SOURCE = (
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
)
NETWORK_ERRORS = (
    "Could not find a version",
    "Failed to establish",
    "Temporary failure",
    "No matching distribution",
)


def run(
    command: list[str], cwd: Path = REPO, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0 and any(e in result.stderr for e in NETWORK_ERRORS):
        pytest.skip(f"PyPI unreachable for {command[:4]}: {result.stderr.strip()[-300:]}")
    assert result.returncode == 0, f"{shlex.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


def project_version() -> str:
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    assert match
    return match.group(1)


def test_versions_agree() -> None:
    """Semantic version in pyproject.toml = package __version__ = chart appVersion = CHANGELOG."""
    version = project_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert __version__ == version
    chart = (REPO / "helm" / "galera-health" / "Chart.yaml").read_text()
    assert f'appVersion: "{version}"' in chart
    assert re.search(r"^version: \d+\.\d+\.\d+$", chart, re.MULTILINE)
    assert f"## [{version}]" in (REPO / "CHANGELOG.md").read_text()


def test_wheel_and_sdist_from_the_build_backend(tmp_path: Path) -> None:
    # a copy of the working tree, so that setuptools' build/ and egg-info stay out of the repo
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(source)])
    version = project_version()
    wheel = out / f"galera_health-{version}-py3-none-any.whl"
    sdist = out / f"galera_health-{version}.tar.gz"
    assert wheel.exists() and sdist.exists(), list(out.iterdir())
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"galera_health-{version}.dist-info"
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert {"galera_health/__init__.py", "galera_health/cli.py", "galera_health/web.py"} <= names
    assert any(n.startswith("galera_health/static/") and n.endswith(".html") for n in names)
    assert not any(n.startswith(("tests/", "helm/", "bench/")) for n in names)
    assert "[console_scripts]" in entry_points
    assert "galera-health = galera_health.cli:main" in entry_points
    assert f"Version: {version}" in metadata
    with tarfile.open(sdist) as archive:
        members = {m.name for m in archive.getmembers()}
    root = f"galera_health-{version}"
    assert {
        f"{root}/pyproject.toml",
        f"{root}/README.md",
        f"{root}/galera_health/cli.py",
    } <= members


def dockerfile_run_lines() -> list[str]:
    """RUN instructions of the Dockerfile, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [" ".join(line.split()[1:]) for line in text.splitlines() if line.startswith("RUN ")]


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.MULTILINE)
    assert [s[1] for s in stages] == ["builder", ""]
    assert all(re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim", s[0]) for s in stages)
    final = text.split("\nFROM ")[-1]
    assert "apt-get" not in final and "gcc" not in final and "COPY " not in final
    assert re.search(r"^USER 10001:10001$", final, re.MULTILINE)
    assert 'ENTRYPOINT ["galera-health", "serve"]' in final
    healthcheck = re.search(r"^HEALTHCHECK .*$", final.replace("\\\n", " "), re.MULTILINE)
    assert (
        healthcheck
        and "urllib.request" in healthcheck.group(0)
        and "/livez" in healthcheck.group(0)
    )
    assert "uninstall -y pip" in final
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :][:4] == [
        "*",
        "!pyproject.toml",
        "!README.md",
        "!galera_health/",
    ]


def test_dockerfile_install_steps_give_a_working_agent(tmp_path: Path) -> None:
    """`pip wheel --wheel-dir W .` then `pip install --no-index --find-links W galera_health`
    into a clean virtualenv; the installed console script serves /livez and fails closed."""
    wheel_step, install_step = [line for line in dockerfile_run_lines() if "pip " in line][:2]
    assert wheel_step == "pip wheel --wheel-dir /wheels ."
    assert install_step.startswith("--mount=type=bind,from=builder,source=/wheels,target=/wheels")
    install = install_step.split("--mount=type=bind,from=builder,source=/wheels,target=/wheels")[1]
    install = install.split("&&")[0].strip()
    assert install == "pip install --no-index --find-links /wheels galera_health"

    # the builder stage's context: COPY pyproject.toml README.md ./ and COPY galera_health
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    left_out = [  # .dockerignore's exclusions inside galera_health/ (the demo and its test bed)
        line.removeprefix("galera_health/")
        for line in (REPO / ".dockerignore").read_text().split()
        if line.startswith("galera_health/") and line.endswith(".py")
    ]
    assert left_out == ["demo.py", "testbed.py"]
    shutil.copytree(
        REPO / "galera_health",
        source / "galera_health",
        ignore=shutil.ignore_patterns("__pycache__", *left_out),
    )
    wheels = tmp_path / "wheels"
    venv = tmp_path / "venv"
    run(
        [sys.executable, "-m", *shlex.split(wheel_step.replace("/wheels", str(wheels)))],
        cwd=source,
    )
    run([sys.executable, "-m", "venv", str(venv)])
    pip_args = shlex.split(install.replace("/wheels", str(wheels)))
    assert pip_args[0] == "pip"
    run([str(venv / "bin" / "python"), "-m", *pip_args], cwd=tmp_path)

    agent = venv / "bin" / "galera-health"
    version = run([str(agent), "--version"], cwd=tmp_path).stdout.strip()
    assert version == f"galera-health {project_version()}"
    located = run(
        [str(venv / "bin" / "python"), "-c", "import galera_health; print(galera_health.__file__)"],
        cwd=tmp_path,
    )
    assert located.stdout.startswith(str(venv)), "the venv must use the installed wheel"
    # the image carries no code it cannot run: without MariaDB the demo is one line, exit 2
    demo = subprocess.run(
        [str(agent), "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert demo.returncode == 2, demo
    assert demo.stderr.startswith("galera-health: error: the demo is not in this installation")
    assert "Traceback" not in demo.stderr

    port, dead = free_ports(2)
    password = tmp_path / "password"
    password.write_text("unused\n")
    password.chmod(0o600)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\nuser = "health"\npassword_file = "{password}"\n'
        f'log_format = "json"\n\n[nodes]\nn1 = "127.0.0.1:{dead}"\n'
    )
    process = subprocess.Popen(
        [str(agent), "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        livez = wait_http(f"http://127.0.0.1:{port}/livez", 200, process)
        assert livez == 200
        assert wait_http(f"http://127.0.0.1:{port}/health", 503, process) == 503
    finally:
        process.terminate()  # SIGTERM: the drain; a second one exits at once
        time.sleep(0.3)
        if process.poll() is None:
            process.terminate()
        output, _ = process.communicate(timeout=30)
    events = [json.loads(line).get("event") for line in output.splitlines()]
    assert "start" in events, output


def wait_http(url: str, want: int, process: subprocess.Popen[str], timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        assert process.poll() is None, f"agent exited {process.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        if status == want:
            return status
        time.sleep(0.1)
    return status
