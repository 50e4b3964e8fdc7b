"""Config as hostile input, through the real command line: any document either works or gives
exit 2 with one line naming what is wrong. Never a traceback."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from galera_health.cli import main
from galera_health.config import KEYS

KEY = st.one_of(st.sampled_from(sorted(KEYS)), st.text("abcdefghijklmnopqrstuvwxyz_", max_size=12))
SCALAR = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: (
            "nan" if f != f else ("inf" if f == float("inf") else "-inf" if f < -1e308 else repr(f))
        )
    ),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=20).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.sampled_from(['"127.0.0.1:1"', '"[::1]:1"', '"/nonexistent.sock"', "[]", "{}", '[1, "a"]']),
)
NODES_TABLE = st.dictionaries(
    st.text("abcn1-_.", min_size=1, max_size=6),
    st.sampled_from(['"127.0.0.1:1"', '"127.0.0.1:0"', '"[::1]:1"', "1", '""', '"::1"']),
    max_size=3,
)


@st.composite
def documents(draw: st.DrawFn) -> str:
    lines = [
        f"{key} = {value}" for key, value in draw(st.dictionaries(KEY, SCALAR, max_size=6)).items()
    ]
    if draw(st.booleans()):
        nodes = draw(NODES_TABLE)
        lines.append("[nodes]")
        lines += [f'"{name}" = {address}' for name, address in nodes.items()]
    if draw(st.integers(0, 9)) == 0:
        lines.append(draw(st.text(max_size=30)))  # raw junk
    return "\n".join(lines)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_any_config_file_is_exit_2_with_one_line_or_runs(document: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(document)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(
                ["check", "--config", handle.name, "--node", "n1=127.0.0.1:1", "--user", "u",
                 "--connect-timeout", "1", "--read-timeout", "2"]
            )  # fmt: skip
    finally:
        os.unlink(handle.name)
    errors = err.getvalue()
    assert "Traceback" not in errors
    assert code in (1, 2), (code, document, errors)
    if code == 2 and not out.getvalue():
        lines = errors.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("galera-health: error: "), errors
    else:
        assert out.getvalue().startswith("n1: "), out.getvalue()


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(f"GALERA_HEALTH_{k.upper()}" for k in KEYS)),
        st.text(max_size=15),
        max_size=4,
    )
)
def test_any_environment_is_exit_2_with_one_line_or_runs(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if "\x00" not in v and k != "GALERA_HEALTH_NODES"}
    saved = {k: os.environ.get(k) for k in env}
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update(env)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(
                ["check", "--node", "n1=127.0.0.1:1", "--user", "u", "--connect-timeout", "1",
                 "--read-timeout", "2"]
            )  # fmt: skip
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert "Traceback" not in err.getvalue()
    assert code in (1, 2)
    if code == 2 and not out.getvalue():
        assert err.getvalue().startswith("galera-health: error: ")
