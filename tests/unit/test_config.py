"""Settings from flags, env, TOML and option files; every mistake is one clear sentence."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from galera_health.config import (
    ConfigError,
    ListenAddress,
    NodeAddress,
    load_settings,
    parse_host_port,
    parse_node,
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
        ('usr = "x"', "unknown key 'usr'"),
        ('password = "x"', "password_file or GALERA_HEALTH_PASSWORD"),
        ("interval = -1", "interval .* at least 0.1"),
        ('interval = "fast"', "interval .* number"),
        ("read_timeout = 1.5", "read_timeout .* whole number"),
        ("read_timeout = true", "read_timeout .* boolean"),
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
    with pytest.raises(ConfigError, match="unknown environment variable GALERA_HEALTH_INTREVAL"):
        load_settings(flags(nodes=["127.0.0.1"], user="u"), {"GALERA_HEALTH_INTREVAL": "1"})
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
