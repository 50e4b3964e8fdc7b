"""Settings: typed, validated once, from defaults < TOML file < GALERA_HEALTH_* env < flags.

Every mistake a user can make here raises ConfigError with one sentence that names the key, the
source and the fix; the CLI turns it into exit code 2. Nothing in this module logs a password.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .verdict import Policy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_PREFIX = "GALERA_HEALTH_"
DEFAULT_MYSQL_PORT = 3306
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
# Kubernetes injects these for a Service named galera-health into every pod of its namespace;
# they are not ours and must not stop the agent.
SERVICE_LINK_RE = re.compile(
    r"^GALERA_HEALTH_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$"
)


class ConfigError(Exception):
    """A user-caused configuration problem; its text is shown as is (no traceback)."""


# Scheduling slack on top of interval + timeout for a healthy verdict (see Settings.healthy_max_age)
HEALTHY_GRACE = 0.5
# Seconds between polls. A fact the node reports reaches the HTTP answer within one interval plus
# one poll: 0.25 s keeps that under 0.45 s at any phase, for 4 statements/s on the node over its
# one connection (docs/benchmarks.md, "Cache lag").
DEFAULT_INTERVAL = 0.25


@dataclass(frozen=True)
class NodeAddress:
    """Where one Galera node's MySQL protocol is reached: TCP host:port or a Unix socket."""

    name: str
    host: str | None = None
    port: int | None = None
    unix_socket: str | None = None

    def display(self) -> str:
        if self.unix_socket is not None:
            return self.unix_socket
        assert self.host is not None and self.port is not None
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def display(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    """Who the agent logs in as. The password is read when connecting, never stored here,
    so that a rotated password file is picked up at the next reconnect."""

    user: str
    password_file: str | None = None
    password_env: str | None = None
    option_file: str | None = None

    def password(self) -> str:
        if self.password_file is not None:
            try:
                with open(self.password_file, encoding="utf-8") as handle:
                    return handle.read().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(
                    f"cannot read password_file {self.password_file!r}: {exc.strerror}; "
                    "check the path and that the agent's user may read it"
                ) from None
        if self.password_env is not None:
            return os.environ.get(self.password_env, "")
        if self.option_file is not None:
            return read_option_file(self.option_file).get("password", "")
        return ""


@dataclass(frozen=True)
class Tls:
    """TLS to MySQL. Without a CA the driver still encrypts when the server offers TLS, but
    verifies nothing; with `ca` it verifies the server's certificate."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    verify_identity: bool = False


@dataclass(frozen=True)
class Timeouts:
    """Deadlines for every step to MySQL. The driver takes whole seconds."""

    connect: int = 2
    read: int = 2
    write: int = 2
    statement: float = 1.0


@dataclass(frozen=True)
class Settings:
    nodes: tuple[NodeAddress, ...]
    credentials: Credentials
    listen: ListenAddress = field(default_factory=lambda: ListenAddress("0.0.0.0", 9200))
    interval: float = DEFAULT_INTERVAL
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_age_setting: float | None = None
    backoff_max: float = 30.0
    stuck_after: float = 60.0
    log_level: str = "info"
    log_format: str = "text"
    policy: Policy = field(default_factory=Policy)
    drain_seconds: float = 11.0
    state_dir: str | None = None
    kill_sessions: bool = False
    kill_sessions_after: float = 10.0
    tls: Tls = field(default_factory=Tls)
    status_listen: ListenAddress | None = None
    status_token_file: str | None = None
    status_tls_cert: str | None = None
    status_tls_key: str | None = None
    agent_check_listen: ListenAddress | None = None
    config_path: str | None = None

    @property
    def max_age(self) -> float:
        """Default: three missed polls plus one poll's worst case (connect + read)."""
        if self.max_age_setting is not None:
            return self.max_age_setting
        return 3 * self.interval + self.timeouts.connect + self.timeouts.read

    @property
    def healthy_max_age(self) -> float:
        """How long a healthy verdict vouches for the node: until the next poll must have
        answered (interval + the longer timeout + HEALTHY_GRACE), at most max_age. Past it the
        poller is late (starved or stuck) and a fault could hide longer than the promised
        detection bound, so the node answers 503 stale instead of an old 200."""
        bound = self.interval + max(self.timeouts.connect, self.timeouts.read) + HEALTHY_GRACE
        return min(self.max_age, bound)

    def node(self, name: str) -> NodeAddress | None:
        return next((n for n in self.nodes if n.name == name), None)


# --- parsing of single values -------------------------------------------------------------


def parse_host_port(text: str, what: str, default_port: int | None) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, `host` (default port); a bare IPv6 literal needs brackets."""
    text = text.strip()
    host: str
    port_text: str | None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ConfigError(f"{what}: {text!r} has '[' without ']'; write IPv6 as [::1]:3306")
        host = text[1:close]
        rest = text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"{what}: {text!r} is not [ipv6]:port")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{what}: {host!r} in brackets is not an IPv6 address") from None
    elif text.count(":") > 1:
        raise ConfigError(f"{what}: {text!r} is ambiguous; write IPv6 with brackets: [::1]:3306")
    else:
        host, _, port_text = text.partition(":")
        if not _:
            port_text = None
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"{what}: {text!r} has no valid host; expected host:port")
    if port_text is None:
        if default_port is None:
            raise ConfigError(f"{what}: {text!r} has no port; expected host:port")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{what}: port {port_text!r} in {text!r} is not a number in 1-65535")
    return host, int(port_text)


def parse_node(spec: str, index: int, what: str) -> NodeAddress:
    """`name=address` or `address`; address is host[:port], [v6][:port] or /path/to/socket."""
    name, sep, address = spec.partition("=")
    if not sep:
        name, address = f"n{index}", spec
    return node_from(name.strip(), address.strip(), what)


def node_from(name: str, address: str, what: str) -> NodeAddress:
    if not NODE_NAME_RE.match(name):
        raise ConfigError(
            f"{what}: node name {name!r} must be 1-63 letters, digits, '_', '.' or '-' "
            "(it appears in URLs such as /health/<name>)"
        )
    if not address:
        raise ConfigError(f"{what}: node {name!r} has no address; expected host:port or a socket")
    if address.startswith("/"):
        return NodeAddress(name=name, unix_socket=address)
    host, port = parse_host_port(address, f"{what} (node {name})", DEFAULT_MYSQL_PORT)
    return NodeAddress(name=name, host=host, port=port)


def read_option_file(path: str) -> dict[str, str]:
    """The `[client]` group of a MySQL option file (~/.my.cnf), as the mysql client reads it."""
    from mysql.connector.optionfiles import MySQLOptionsParser

    expanded = os.path.expanduser(path)
    if not os.access(expanded, os.R_OK):
        raise ConfigError(
            f"cannot read option_file {path!r}; check the path and that the agent may read it"
        )
    try:
        group: dict[str, Any] = MySQLOptionsParser([expanded], keep_dashes=False).get_groups(
            "client"
        )
    except (ValueError, OSError) as exc:
        raise ConfigError(f"option_file {path!r} is not a valid MySQL option file: {exc}") from None
    values: dict[str, str] = {}
    for key in ("user", "password"):
        value = group.get(key)
        if isinstance(value, str):
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key] = value
    return values


# --- the raw key table ----------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    kind: type
    minimum: float | None = None
    in_file: bool = True
    help: str = ""


KEYS: dict[str, Key] = {
    "nodes": Key(dict, help="node name -> address"),
    "listen": Key(str),
    "interval": Key(float, minimum=0.1),
    "max_age": Key(float, minimum=0.1),
    "hold_down": Key(float, minimum=0.0),
    "user": Key(str),
    "password_file": Key(str),
    "password": Key(str, in_file=False),
    "option_file": Key(str),
    "connect_timeout": Key(int, minimum=1),
    "read_timeout": Key(int, minimum=1),
    "write_timeout": Key(int, minimum=1),
    "statement_timeout": Key(float, minimum=0.1),
    "backoff_max": Key(float, minimum=0.1),
    "stuck_after": Key(float, minimum=1.0),
    "log_level": Key(str),
    "log_format": Key(str),
    "available_when_donor": Key(bool),
    "available_when_readonly": Key(bool),
    "allow_standalone": Key(bool),
    "max_recv_queue": Key(int, minimum=0),
    "min_cluster_size": Key(int, minimum=1),
    "rise": Key(int, minimum=1),
    "fall": Key(int, minimum=1),
    "fall_timeout": Key(int, minimum=1),
    "fall_agent_error": Key(int, minimum=1),
    "drain_seconds": Key(float, minimum=0.0),
    "state_dir": Key(str),
    "kill_sessions": Key(bool),
    "kill_sessions_after": Key(float, minimum=0.0),
    "ssl_ca": Key(str),
    "ssl_cert": Key(str),
    "ssl_key": Key(str),
    "ssl_verify_identity": Key(bool),
    "status_listen": Key(str),
    "status_token_file": Key(str),
    "status_tls_cert": Key(str),
    "status_tls_key": Key(str),
    "agent_check_listen": Key(str),
}

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def coerce(key: str, value: Any, source: str) -> Any:
    """Bring one raw value to the key's type, or say exactly what is wrong with it."""
    spec = KEYS[key]
    where = f"{key} (from {source})"
    if spec.kind is dict:
        return value
    if spec.kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {type(value).__name__}")
        return value
    if spec.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a number, got a boolean")
    number: float
    if isinstance(value, str):
        try:
            number = int(value) if spec.kind is int else float(value)
        except ValueError:
            kind = "a whole number" if spec.kind is int else "a number"
            raise ConfigError(f"{where} must be {kind} of seconds, got {value!r}") from None
    elif isinstance(value, (int, float)):
        number = value
    else:
        raise ConfigError(f"{where} must be a number, got {type(value).__name__}")
    if spec.kind is int and number != int(number):
        raise ConfigError(f"{where} must be a whole number of seconds (the driver's unit)")
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(f"{where} must be a finite number")
    if spec.minimum is not None and number < spec.minimum:
        raise ConfigError(f"{where} must be at least {spec.minimum:g}, got {number:g}")
    return int(number) if spec.kind is int else float(number)


def raw_from_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid TOML: {exc}") from None
    raw: dict[str, Any] = {}
    for key, value in document.items():
        spec = KEYS.get(key)
        if spec is None or not spec.in_file:
            hint = (
                "; put the password in password_file or GALERA_HEALTH_PASSWORD"
                if key == "password"
                else f"; known keys: {', '.join(k for k, s in KEYS.items() if s.in_file)}"
            )
            raise ConfigError(f"unknown key {key!r} in config file {path!r}{hint}")
        if key == "nodes":
            if not isinstance(value, dict) or not value:
                raise ConfigError(
                    f'nodes in {path!r} must be a table like [nodes] n1 = "127.0.0.1:3306"'
                )
            nodes = []
            for name, address in value.items():
                if not isinstance(address, str):
                    raise ConfigError(f"nodes.{name} in {path!r} must be a string address")
                nodes.append(node_from(name, address, f"config file {path!r}"))
            raw[key] = nodes
        else:
            raw[key] = coerce(key, value, f"config file {path!r}")
    return raw


def raw_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or SERVICE_LINK_RE.match(name):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key == "config":
            continue
        if key not in KEYS:
            raise ConfigError(
                f"unknown environment variable {name}; known: "
                + ", ".join(ENV_PREFIX + k.upper() for k in KEYS)
                + f", {ENV_PREFIX}CONFIG"
            )
        if key == "nodes":
            specs = [s for s in value.split(",") if s.strip()]
            raw[key] = [parse_node(s, i, name) for i, s in enumerate(specs, 1)]
        elif key == "password":
            raw["password_env"] = name
        else:
            raw[key] = coerce(key, value, name)
    return raw


def build_settings(layers: Sequence[dict[str, Any]], need_listen: bool = True) -> Settings:
    """Merge raw layers (later wins) and validate the whole."""
    raw: dict[str, Any] = {}
    for layer in layers:
        raw.update({k: v for k, v in layer.items() if v is not None})

    nodes = raw.get("nodes") or []
    if not nodes:
        raise ConfigError(
            "no node configured; give --node NAME=HOST:PORT (or a socket path), "
            "GALERA_HEALTH_NODES, or a [nodes] table in the config file"
        )
    names = [n.name for n in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"node name {duplicates[0]!r} is used twice; give each node its own name")

    option_values: dict[str, str] = {}
    if raw.get("option_file"):
        option_values = read_option_file(raw["option_file"])
    user = raw.get("user") or option_values.get("user")
    if not user:
        raise ConfigError(
            "no MySQL user; give --user, GALERA_HEALTH_USER, user in the config file, "
            "or user= in the [client] group of option_file"
        )
    password_file = raw.get("password_file")
    if password_file is not None and not os.access(password_file, os.R_OK):
        raise ConfigError(
            f"cannot read password_file {password_file!r}; check the path and its permissions"
        )
    credentials = Credentials(
        user=user,
        password_file=password_file,
        password_env=raw.get("password_env"),
        option_file=raw.get("option_file") if "password" in option_values else None,
    )

    listen = ListenAddress("0.0.0.0", 9200)
    if need_listen and raw.get("listen"):
        listen = ListenAddress(*parse_host_port(raw["listen"], "listen", None))

    for key in (
        "ssl_ca",
        "ssl_cert",
        "ssl_key",
        "status_token_file",
        "status_tls_cert",
        "status_tls_key",
    ):
        path = raw.get(key)
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"cannot read {key} {path!r}; check the path and its permissions")
    if (raw.get("ssl_cert") is None) != (raw.get("ssl_key") is None):
        raise ConfigError("ssl_cert and ssl_key go together; give both or neither")
    if raw.get("ssl_verify_identity") and raw.get("ssl_ca") is None:
        raise ConfigError("ssl_verify_identity needs ssl_ca (the CA to verify the server with)")
    status_listen = None
    if need_listen and raw.get("status_listen"):
        status_listen = ListenAddress(*parse_host_port(raw["status_listen"], "status_listen", None))
        if status_listen == listen:
            raise ConfigError("status_listen must differ from listen (or be left out)")
    agent_check_listen = None
    if need_listen and raw.get("agent_check_listen"):
        agent_check_listen = ListenAddress(
            *parse_host_port(raw["agent_check_listen"], "agent_check_listen", None)
        )
        if agent_check_listen in (listen, status_listen):
            raise ConfigError(
                "agent_check_listen must differ from listen and status_listen (it is a TCP "
                "listener of its own, not HTTP)"
            )
    if (raw.get("status_tls_cert") is None) != (raw.get("status_tls_key") is None):
        raise ConfigError("status_tls_cert and status_tls_key go together; give both or neither")
    if raw.get("status_tls_cert") is not None and raw.get("status_listen") is None:
        raise ConfigError(
            "status_tls_cert needs status_listen: TLS is for the status listener only "
            "(the LB's probes stay plain HTTP)"
        )

    state_dir = raw.get("state_dir")
    if state_dir is not None and not os.path.isdir(state_dir):
        raise ConfigError(
            f"state_dir {state_dir!r} is not a directory; create it (mkdir -p) or fix the path"
        )

    level = str(raw.get("log_level", "info")).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    log_format = str(raw.get("log_format", "text")).lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")

    defaults = Timeouts()
    timeouts = Timeouts(
        connect=raw.get("connect_timeout", defaults.connect),
        read=raw.get("read_timeout", defaults.read),
        write=raw.get("write_timeout", defaults.write),
        statement=raw.get("statement_timeout", defaults.statement),
    )
    if timeouts.statement >= timeouts.read:
        raise ConfigError(
            f"statement_timeout ({timeouts.statement:g}) must be below read_timeout "
            f"({timeouts.read}) so the server ends a slow query before the client gives up"
        )
    return Settings(
        nodes=tuple(nodes),
        credentials=credentials,
        listen=listen,
        interval=raw.get("interval", DEFAULT_INTERVAL),
        timeouts=timeouts,
        max_age_setting=raw.get("max_age"),
        backoff_max=raw.get("backoff_max", 30.0),
        stuck_after=raw.get("stuck_after", 60.0),
        log_level=level,
        log_format=log_format,
        policy=Policy(
            hold_down=raw.get("hold_down"),
            available_when_donor=raw.get("available_when_donor", False),
            available_when_readonly=raw.get("available_when_readonly", False),
            allow_standalone=raw.get("allow_standalone", False),
            max_recv_queue=raw.get("max_recv_queue"),
            min_cluster_size=raw.get("min_cluster_size"),
            rise=raw.get("rise", 1),
            fall=raw.get("fall", 1),
            fall_timeout=raw.get("fall_timeout"),
            fall_agent_error=raw.get("fall_agent_error"),
        ),
        drain_seconds=raw.get("drain_seconds", 11.0),
        state_dir=raw.get("state_dir"),
        kill_sessions=raw.get("kill_sessions", False),
        kill_sessions_after=raw.get("kill_sessions_after", 10.0),
        tls=Tls(
            ca=raw.get("ssl_ca"),
            cert=raw.get("ssl_cert"),
            key=raw.get("ssl_key"),
            verify_identity=raw.get("ssl_verify_identity", False),
        ),
        status_listen=status_listen,
        status_token_file=raw.get("status_token_file"),
        status_tls_cert=raw.get("status_tls_cert"),
        status_tls_key=raw.get("status_tls_key"),
        agent_check_listen=agent_check_listen,
        config_path=raw.get("config_path"),
    )


def load_settings(
    flags: dict[str, Any],
    env: Mapping[str, str],
    config_path: str | None = None,
    need_listen: bool = True,
) -> Settings:
    """flags: already-typed values from the command line (None = not given)."""
    path = config_path or env.get(ENV_PREFIX + "CONFIG")
    file_layer = raw_from_toml(path) if path else {}
    file_layer["config_path"] = path
    flag_layer: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        if key == "nodes":
            flag_layer[key] = [parse_node(s, i, "--node") for i, s in enumerate(value, 1)]
        else:
            flag_layer[key] = coerce(key, value, "--" + key.replace("_", "-"))
    return build_settings([file_layer, raw_from_env(env), flag_layer], need_listen=need_listen)
