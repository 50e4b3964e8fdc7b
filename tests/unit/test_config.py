"""Settings from flags, env, TOML and option files; every mistake is one clear sentence."""

from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from galera_health.config import (
    DEFAULT_INTERVAL,
    KEYS,
    SETTINGS,
    ConfigError,
    ListenAddress,
    NodeAddress,
    describe,
    load_settings,
    parse_host_port,
    parse_node,
    raw_from_env,
    raw_from_toml,
    resolve,
)


@pytest.fixture
def password_file(tmp_path: Path) -> str:
    path = tmp_path / "password"
    path.write_text("s3cret-pw\n")
    path.chmod(0o600)
    return str(path)


def flags(**values: Any) -> dict[str, Any]:
    return values


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("n1=127.0.0.1:3306", NodeAddress("n1", "127.0.0.1", 3306)),
        ("db=galera-0.galera:3307", NodeAddress("db", "galera-0.galera", 3307)),
        ("v6=[::1]:3306", NodeAddress("v6", "::1", 3306)),
        ("v6=[::1]", NodeAddress("v6", "::1", 3306)),
        (
            "local=/run/mysqld/mysqld.sock",
            NodeAddress("local", unix_socket="/run/mysqld/mysqld.sock"),
        ),
        ("127.0.0.1", NodeAddress("n1", "127.0.0.1", 3306)),
    ],
)
def test_node_forms(spec: str, expected: NodeAddress) -> None:
    assert parse_node(spec, 1, "--node") == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("n1=127.0.0.1:99999", "1-65535"),
        ("n1=127.0.0.1:abc", "1-65535"),
        ("n1=::1:3306", "brackets"),
        ("n1=[::1:3306", "without ']'"),
        ("n1=[nothost]:3306", "not an IPv6"),
        ("bad name=127.0.0.1:3306", "node name"),
        ("n1=", "no address"),
        ("n1=:3306", "no valid host"),
    ],
)
def test_bad_nodes_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_node(spec, 1, "--node")


def test_listen_forms() -> None:
    assert parse_host_port("[::]:9200", "listen", None) == ("::", 9200)
    assert parse_host_port("0.0.0.0:9200", "listen", None) == ("0.0.0.0", 9200)
    with pytest.raises(ConfigError, match="no port"):
        parse_host_port("0.0.0.0", "listen", None)
    with pytest.raises(ConfigError, match=r"'9290' has no host, only a port; .* 0\.0\.0\.0:9290"):
        parse_host_port("9290", "listen", None)
    with pytest.raises(ConfigError, match="'3307' has no host, only a port"):
        parse_node("n1=3307", 1, "--node")  # not host "3307" on port 3306


def test_a_node_without_a_port_is_on_3306() -> None:
    assert parse_node("n1=foo", 1, "--node") == NodeAddress("n1", "foo", 3306)


def test_flags_env_and_file_layer_in_order(tmp_path: Path, password_file: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
user = "from_file"
password_file = "{password_file}"
interval = 2.5
read_timeout = 3
listen = "127.0.0.1:9300"
[nodes]
a = "127.0.0.1:3306"
b = "/run/mysqld/mysqld.sock"
"""
    )
    env = {"GALERA_HEALTH_INTERVAL": "0.5", "GALERA_HEALTH_USER": "from_env"}
    settings = load_settings(flags(user="from_flag"), env, str(config))
    assert settings.credentials.user == "from_flag"
    assert settings.interval == 0.5
    assert settings.timeouts.read == 3
    assert settings.listen.display() == "127.0.0.1:9300"
    assert [n.name for n in settings.nodes] == ["a", "b"]
    assert settings.credentials.password() == "s3cret-pw"
    # default max_age: three intervals plus one poll's worst case
    assert settings.max_age == 3 * 0.5 + 2 + 3
    # a healthy verdict vouches only until the next poll must have answered, plus 0.5 s
    assert settings.healthy_max_age == 0.5 + 3 + 0.5


def test_env_nodes_and_password(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "GALERA_HEALTH_NODES": "n1=127.0.0.1:3306, n2=[::1]:3307",
        "GALERA_HEALTH_USER": "health",
        "GALERA_HEALTH_PASSWORD": "pw-from-env",
    }
    monkeypatch.setitem(os.environ, "GALERA_HEALTH_PASSWORD", "pw-from-env")
    settings = load_settings({}, env)
    assert [n.display() for n in settings.nodes] == ["127.0.0.1:3306", "[::1]:3307"]
    assert settings.credentials.password() == "pw-from-env"


def test_kubernetes_service_links_are_not_unknown_keys() -> None:
    env = {
        "GALERA_HEALTH_SERVICE_HOST": "10.0.0.7",
        "GALERA_HEALTH_SERVICE_PORT": "9200",
        "GALERA_HEALTH_SERVICE_PORT_HTTP": "9200",
        "GALERA_HEALTH_PORT": "tcp://10.0.0.7:9200",
        "GALERA_HEALTH_PORT_9200_TCP": "tcp://10.0.0.7:9200",
        "GALERA_HEALTH_PORT_9200_TCP_ADDR": "10.0.0.7",
        "GALERA_HEALTH_PORT_9200_TCP_PORT": "9200",
        "GALERA_HEALTH_PORT_9200_TCP_PROTO": "tcp",
    }
    settings = load_settings(flags(nodes=["127.0.0.1"], user="u"), env)
    assert settings.listen.display() == "0.0.0.0:9200"


def test_option_file_gives_user_and_password(tmp_path: Path) -> None:
    cnf = tmp_path / "my.cnf"
    cnf.write_text(
        '[client]\nuser = monitor\npassword = "p#ss word"\n[mysqld]\nskip-name-resolve\n'
    )
    settings = load_settings(flags(nodes=["127.0.0.1"], option_file=str(cnf)), {})
    assert settings.credentials.user == "monitor"
    assert settings.credentials.password() == "p#ss word"


def test_password_file_is_reread_at_every_call(password_file: str) -> None:
    settings = load_settings(flags(nodes=["127.0.0.1"], user="u", password_file=password_file), {})
    assert settings.credentials.password() == "s3cret-pw"
    Path(password_file).write_text("rotated\n")
    assert settings.credentials.password() == "rotated"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('usr = "x"', "unknown key 'usr' .*; did you mean user[?]"),
        ("intervall = 2", "unknown key 'intervall' .*; did you mean interval[?]"),
        ('password = "x"', "password_file or GALERA_HEALTH_PASSWORD"),
        ("interval = -1", "interval .* at least 0.1"),
        ('interval = "fast"', "interval .* number"),
        ("read_timeout = 1.5", "read_timeout .* whole number"),
        ("read_timeout = true", "read_timeout .* boolean"),
        ("connect_timeout = nan", "connect_timeout .* finite"),
        ("connect_timeout = inf", "connect_timeout .* finite"),
        ("interval = -inf", "interval .* finite"),
        ("nodes = 3", "nodes .* must be a table"),
        ("[nodes]\nn1 = 3306", "nodes.n1 .* string"),
        ('[nodes]\nn1 = "host:0"', "1-65535"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_config_file(tmp_path: Path, document: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(document)
    with pytest.raises(ConfigError, match=message):
        load_settings(flags(nodes=["127.0.0.1"], user="u"), {}, str(config))


def test_missing_pieces_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no node configured"):
        load_settings(flags(user="u"), {})
    with pytest.raises(ConfigError, match="no MySQL user"):
        load_settings(flags(nodes=["127.0.0.1"]), {})
    with pytest.raises(ConfigError, match="cannot read password_file"):
        load_settings(flags(nodes=["127.0.0.1"], user="u", password_file=str(tmp_path / "no")), {})
    with pytest.raises(
        ConfigError,
        match=r"unknown environment variable GALERA_HEALTH_INTREVAL; "
        r"did you mean GALERA_HEALTH_INTERVAL\?$",
    ):
        load_settings(flags(nodes=["127.0.0.1"], user="u"), {"GALERA_HEALTH_INTREVAL": "1"})
    with pytest.raises(ConfigError, match=r"GALERA_HEALTH_ZZZ; the keys are listed in README\.md"):
        load_settings(flags(nodes=["127.0.0.1"], user="u"), {"GALERA_HEALTH_ZZZ": "1"})
    with pytest.raises(ConfigError, match="used twice"):
        load_settings(flags(nodes=["a=127.0.0.1", "a=127.0.0.2"], user="u"), {})
    with pytest.raises(ConfigError, match="statement_timeout"):
        load_settings(flags(nodes=["127.0.0.1"], user="u", read_timeout="1"), {})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(flags(nodes=["127.0.0.1"], user="u"), {}, str(tmp_path / "absent.toml"))


KEY_NAMES = st.sampled_from(
    [
        "interval",
        "max_age",
        "read_timeout",
        "listen",
        "user",
        "nodes",
        "hold_down",
        "zzz",
        "log_level",
    ]
)
TOML_VALUES = st.one_of(
    st.integers(-5, 100000).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.text(alphabet="abc:[]/.0123 ", max_size=12).map(lambda s: '"' + s + '"'),
    st.sampled_from(["true", "false", "[]", "{}"]),
)


@given(st.dictionaries(KEY_NAMES, TOML_VALUES, max_size=5))
def test_any_document_loads_or_raises_config_error(document: dict[str, str]) -> None:
    import tempfile

    text = "\n".join(f"{key} = {value}" for key, value in document.items())
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(text)
    try:
        load_settings(flags(nodes=["127.0.0.1"], user="u"), {}, handle.name)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    finally:
        os.unlink(handle.name)


def test_agent_check_listen_is_off_by_default_and_parsed(tmp_path: Path) -> None:
    base = {"nodes": ["n1=127.0.0.1:3306"], "user": "health"}
    assert load_settings(base, {}).agent_check_listen is None
    settings = load_settings({**base, "agent_check_listen": "127.0.0.1:9300"}, {})
    assert settings.agent_check_listen == ListenAddress("127.0.0.1", 9300)
    from_env = load_settings(base, {"GALERA_HEALTH_AGENT_CHECK_LISTEN": "[::1]:9300"})
    assert from_env.agent_check_listen == ListenAddress("::1", 9300)
    config = tmp_path / "agent.toml"
    config.write_text('agent_check_listen = "0.0.0.0:9300"\n')
    from_file = load_settings(base, {}, config_path=str(config))
    assert from_file.agent_check_listen == ListenAddress("0.0.0.0", 9300)
    with pytest.raises(ConfigError, match="agent_check_listen must differ"):
        load_settings({**base, "listen": "0.0.0.0:9200", "agent_check_listen": "0.0.0.0:9200"}, {})
    with pytest.raises(ConfigError, match="agent_check_listen: port"):
        load_settings({**base, "agent_check_listen": "127.0.0.1:99999"}, {})


# --- one description per setting: flags, env, file, --help, describe() all come from it ------

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_a_flag_an_env_variable_and_a_file_key_with_its_default_in_help(
    tmp_path: Path,
) -> None:
    from galera_health.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for command in ("serve", "check"):
        sub = subparsers.choices[command]  # type: ignore[attr-defined]
        text = " ".join(sub.format_help().split())
        flags = {o for a in sub._actions for o in a.option_strings}
        for setting in SETTINGS:
            wanted = setting.in_flags and command in setting.commands
            assert (setting.flag in flags) == wanted, (command, setting.key)
            if wanted:
                assert f"(default: {setting.default_shown()})" in text, setting.key
    for setting in SETTINGS:
        assert setting.env == "GALERA_HEALTH_" + setting.key.upper()
        if setting.kind in (int, float):
            value = str(setting.minimum if setting.minimum is not None else 1)
            assert raw_from_env({setting.env: value})[setting.key] == float(value)
            document = tmp_path / f"{setting.key}.toml"
            document.write_text(f"{setting.key} = {value}\n")
            assert raw_from_toml(str(document))[setting.key] == float(value)


def test_defaults_come_from_the_typed_settings_and_land_where_described() -> None:
    settings = load_settings({"nodes": ["127.0.0.1"], "user": "u"}, {})
    for setting in SETTINGS:
        if setting.field is not None and setting.key not in ("nodes", "user"):
            assert resolve(settings, setting.field) == setting.default, setting.key
    assert KEYS["interval"].default == DEFAULT_INTERVAL and KEYS["rise"].default == 1
    assert KEYS["interval"].default_shown() == f"{DEFAULT_INTERVAL:g}"
    assert KEYS["listen"].default_shown() == "0.0.0.0:9200"
    given = load_settings(
        {"nodes": ["127.0.0.1"], "user": "u", "rise": "3", "read_timeout": "4", "ssl_key": None},
        {"GALERA_HEALTH_INTERVAL": "0.5"},
    )
    assert (given.policy.rise, given.timeouts.read, given.interval) == (3, 4, 0.5)


def test_describe_shows_every_setting_it_describes_and_no_secret(password_file: str) -> None:
    settings = load_settings(
        {"nodes": ["a=h:1"], "user": "u", "password_file": password_file, "rise": "2"}, {}
    )
    document = describe(settings)
    assert "s3cret-pw" not in str(document)
    for setting in SETTINGS:
        if setting.shown is None:
            continue
        place: Any = document
        for part in setting.shown.split("."):
            place = place[part]
        if setting.shown_as == "given":
            assert isinstance(place, bool), setting.key
    assert document["policy"]["rise"] == 2 and document["timeouts_seconds"]["read"] == 2
    assert set(document) == {  # the /status "agent" object: fields are only ever added
        "user", "password_source", "nodes", "interval_seconds", "max_age_seconds",
        "healthy_max_age_seconds", "timeouts_seconds", "policy", "drain_seconds", "state_dir",
        "kill_sessions", "kill_sessions_after_seconds", "tls", "status_listen", "status_token",
        "status_tls", "agent_check_listen", "config_path", "backoff_max_seconds",
        "stuck_after_seconds", "listen", "log_level", "log_format", "driver_mode", "writer",
        "kubernetes", "recovery",
    }  # fmt: skip
    assert document["writer"] == {
        "enabled": False, "priority": 0, "interval_seconds": 1.0, "takeover_seconds": 3.0,
        "validity_seconds": 2.5, "user": "u", "password_source": f"password_file {password_file}",
        "users": [], "kill_grace_seconds": 6.0,
    }  # fmt: skip
    assert set(document["policy"]) == set(asdict(settings.policy))
    assert set(document["tls"]) == {"ca", "cert", "verify_identity"}


def test_the_readme_table_has_a_row_for_every_setting() -> None:
    text = README.read_text()
    table = text[text.index("| key | default | meaning |") :].split("\n\n", 1)[0]
    documented: set[str] = set()
    for row in table.splitlines()[2:]:
        first = row.split("|")[1]
        documented |= set(re.findall(r"`(?:GALERA_HEALTH_)?([a-z_]+|[A-Z_]+)`", first))
    documented = {key.lower() for key in documented}
    assert documented == set(KEYS), documented ^ set(KEYS)


def test_writer_takeover_below_the_writers_validity_is_one_line() -> None:
    settings = load_settings({"nodes": ["127.0.0.1"], "user": "u", "writer": "true"}, {})
    assert (settings.writer, settings.writer_takeover, settings.writer_validity) == (True, 3.0, 2.5)
    slower = load_settings({"nodes": ["127.0.0.1"], "user": "u", "interval": "2"}, {})
    assert slower.writer_takeover == 4.0
    with pytest.raises(ConfigError) as caught:
        load_settings({"nodes": ["127.0.0.1"], "user": "u", "writer_takeover": "2.5"}, {})
    assert str(caught.value).startswith("writer_takeover (2.5) must be at least 3 s"), caught.value
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        (
            "password",
            '"s3cret-value"',
            "put the password in password_file or GALERA_HEALTH_PASSWORD",
        ),
        ("interval", "2", "move it above the [nodes] table"),
        ("state_dir", '"/run/s3cret-value"', "move it above the [nodes] table"),
    ],
)
def test_a_setting_placed_under_nodes_is_refused_without_its_value(
    tmp_path: Path, key: str, value: str, hint: str
) -> None:
    """TOML puts every key after [nodes] into the table: `password = "x"` there would be a node
    whose address (the password) is logged."""
    config = tmp_path / "agent.toml"
    config.write_text(f'user = "u"\n[nodes]\nn1 = "127.0.0.1:1"\n{key} = {value}\n')
    with pytest.raises(ConfigError) as raised:
        load_settings({}, {}, str(config))
    message = str(raised.value)
    assert f"has a key {key!r}, which is a setting, not a node" in message
    assert message.endswith(hint) and "s3cret" not in message and "\n" not in message
def test_the_writer_account_is_its_own_or_the_monitors(
    password_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GALERA_HEALTH_WRITER_PASSWORD", "s3cret-pw")  # read when connecting
    base = {"nodes": ["a=h:1"], "user": "mon", "password_file": password_file, "writer": "true"}
    alone = load_settings(base, {})
    assert alone.writer_credentials == alone.credentials  # as before writer_user existed
    own = load_settings(
        {**base, "writer_user": "w"}, {"GALERA_HEALTH_WRITER_PASSWORD": "s3cret-pw"}
    )
    assert own.writer_credentials.user == "w" and own.credentials.user == "mon"
    assert own.writer_credentials.password() == "s3cret-pw"
    assert own.credentials.password_file == password_file
    document = describe(own)["writer"]
    assert (document["user"], document["password_source"]) == (
        "w",
        "environment GALERA_HEALTH_WRITER_PASSWORD",
    )
    assert "s3cret-pw" not in str(describe(own))
    by_file = load_settings({**base, "writer_user": "w", "writer_password_file": password_file}, {})
    assert by_file.writer_credentials.password_file == password_file


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"writer_user": "w"}, {}, "writer_user 'w' has no password; give writer_password_file "
         "or GALERA_HEALTH_WRITER_PASSWORD"),
        ({}, {"GALERA_HEALTH_WRITER_PASSWORD": "x"},
         "a writer password without writer_user; give writer_user (the lease's account)"),
        ({"writer_user": "w", "writer_password_file": "/nonexistent/pw"}, {},
         "cannot read writer_password_file '/nonexistent/pw'; check the path and its permissions"),
    ],
)  # fmt: skip
def test_a_missing_writer_password_is_one_line(
    flags: dict[str, str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"nodes": ["a=h:1"], "user": "mon", **flags}, env)
    assert str(caught.value) == message
