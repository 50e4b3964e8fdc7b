"""Settings: typed, validated once, from defaults < TOML file < GALERA_HEALTH_* env < flags.

Every mistake a user can make here raises ConfigError with one sentence that names the key, the
source and the fix; the CLI turns it into exit code 2. Nothing in this module logs a password.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .facts import DRIVER_MODE
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
# Writer lease (docs/architecture.md, "One writer"): the client deadline of every lease statement
# in whole seconds (the driver's unit, so 1 is its shortest), and the margin a take-over waits
# beyond the holder's last possible 200.
LEASE_STATEMENT_TIMEOUT = 1
LEASE_MARGIN = 0.5
# The lease is renewed (and read) at most once a second, however short the poll interval: each
# renewal is a write set replicated to every node (and a binlog event where binlogs are kept).
LEASE_MIN_INTERVAL = 1.0
# How long the holder keeps the role while its node is a Donor (docs/architecture.md, "A
# donating writer"): an IST donation holds that state for a fraction of a second and blocks no
# write; a donation that lasts longer is an SST, which may block writes: the role moves then.
WRITER_DONOR_GRACE = 2.0
# How long after its node stops being the writer the agent kills the sessions of writer_users
# (docs/architecture.md, "Closing the old writer's sessions"): just past the slowest supported
# load balancer's detection, so a pool reconnects through it to the new writer and not to this
# node again. Azure's probe runs every 5 s (its minimum) and one non-200 takes the node out:
# up to 5 s; HAProxy at the recommended inter 1s fastinter 250ms fall 2: up to 1.25 s. Plus 1 s
# for the probe's own answer and the lease job's tick. (An Azure probe whose threshold takes two
# failures needs 11: the README and the chart's agent.writerKillGrace say so.)
WRITER_KILL_GRACE = 6.0
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
    writer: bool = False
    writer_priority: int = 0
    writer_takeover_setting: float | None = None
    # Kubernetes: label the agent's own pod with its role (docs/kubernetes.md, "The role on the
    # pod"); the three paths are the in-cluster defaults, settable for tests and odd setups.
    kubernetes_pod_label: str = ""
    kubernetes_api_url: str | None = None
    kubernetes_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    kubernetes_ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    datadir: str | None = None
    recovery_peers: str | None = None
    # The lease's own account (None: the monitor's, as before it existed); its password is read
    # like the monitor's, from writer_password_file or GALERA_HEALTH_WRITER_PASSWORD.
    writer_user: str | None = None
    writer_password_file: str | None = None
    writer_password_env: str | None = None
    # Whose sessions are killed when this node stops being the writer ("" = nobody: off).
    writer_users_setting: str = ""
    writer_kill_grace: float = WRITER_KILL_GRACE
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

    @property
    def writer_credentials(self) -> Credentials:
        """Who the lease (and anything else that writes) logs in as: writer_user, else the
        monitor account (which then needs the lease's grant: README, "One writer")."""
        if self.writer_user is None:
            return self.credentials
        return Credentials(self.writer_user, self.writer_password_file, self.writer_password_env)

    @property
    def writer_users(self) -> tuple[str, ...]:
        """The client accounts whose sessions the old writer closes (comma-separated)."""
        return tuple(u.strip() for u in self.writer_users_setting.split(",") if u.strip())

    @property
    def writer_interval(self) -> float:
        """Seconds between two lease polls of a node: the poll interval, at least
        LEASE_MIN_INTERVAL."""
        return max(self.interval, LEASE_MIN_INTERVAL)

    @property
    def writer_validity(self) -> float:
        """How long after the start of its last committed renewal the lease holder answers 200
        on /writer: until its next renewal must have committed (writer_interval + the lease
        statement deadline + HEALTHY_GRACE)."""
        return self.writer_interval + LEASE_STATEMENT_TIMEOUT + HEALTHY_GRACE

    @property
    def writer_takeover(self) -> float:
        """Seconds the lease counter must stand still, on a contender's own monotonic clock,
        before it takes over: past the holder's last possible 200 (writer_validity) by
        LEASE_MARGIN, so two nodes never answer 200 because of a take-over."""
        if self.writer_takeover_setting is not None:
            return self.writer_takeover_setting
        return self.writer_validity + LEASE_MARGIN

    def node(self, address: NodeAddress) -> NodeSettings:
        """Everything one watched node's connections are built from."""
        return NodeSettings(
            address=address,
            credentials=self.credentials,
            tls=self.tls,
            timeouts=self.timeouts,
            backoff_max=self.backoff_max,
            interval=self.interval,
            writer=self.writer,
            writer_credentials=self.writer_credentials,
            writer_priority=self.writer_priority,
            writer_interval=self.writer_interval,
            writer_validity=self.writer_validity,
            writer_takeover=self.writer_takeover,
        )


@dataclass(frozen=True)
class NodeSettings:
    """One watched node's part of the settings: what its health poll and its lease are built
    from. A reload that changes any of it replaces the node's runtime (both connections and
    both jobs) whole, so the two never run on different settings (docs/architecture.md,
    "Reloads")."""

    address: NodeAddress
    credentials: Credentials
    tls: Tls
    timeouts: Timeouts
    backoff_max: float
    interval: float
    writer: bool
    writer_credentials: Credentials
    writer_priority: int
    writer_interval: float
    writer_validity: float
    writer_takeover: float


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
    if port_text is None and host.isdigit():
        raise ConfigError(
            f"{what}: {text!r} has no host, only a port; write host:port, "
            f"e.g. 0.0.0.0:{host} (every address) or 127.0.0.1:{host}"
        )
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


def parse_agents(specs: Sequence[str], what: str) -> dict[str, str]:
    """`NAME=http://host:port` each (an agent's base URL), in the given order."""
    agents: dict[str, str] = {}
    for spec in specs:
        name, sep, url = spec.strip().partition("=")
        name, url = name.strip(), url.strip().rstrip("/")
        if not sep or not NODE_NAME_RE.match(name):
            raise ConfigError(f"{what}: {spec!r} is not NAME=URL, e.g. n1=http://10.0.0.1:9200")
        if not re.match(r"^https?://[^/\s]+$", url):
            raise ConfigError(
                f"{what}: {url!r} of {name} is not an agent's base URL, e.g. http://10.0.0.1:9200"
            )
        if name in agents:
            raise ConfigError(f"{what}: {name!r} is named twice; give each node once")
        agents[name] = url
    if not agents:
        raise ConfigError(f"{what}: no agent given; expected NAME=URL")
    return agents


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


# --- one description per setting ----------------------------------------------------------

# What a setting's default is when nothing is configured: the typed dataclasses above hold every
# default once; a Setting points at its field and reads the default from here.
DEFAULTS = Settings(nodes=(), credentials=Credentials(user=""))

SERVE = ("serve",)
BOTH = ("serve", "check")
POLICY_GROUP = "policy (see README: Configuration)"


def resolve(root: Any, path: str) -> Any:
    """`timeouts.connect` of a Settings (or of DEFAULTS)."""
    value = root
    for part in path.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class Setting:
    """One setting, described once. Its key is the TOML key; the environment variable
    (GALERA_HEALTH_<KEY>), the flag (--<key>), its --help line with the default, and where
    describe() shows it are all derived from this.

    `field`: where the value lands in Settings (dotted), and so where its default is read from
    (DEFAULTS); None for the two build_settings assembles itself (nodes' names, the password).
    `default_text`: the default in words, when it is computed rather than a value.
    `shown`: the key path in describe() (None: not shown, e.g. a file already in
    password_source); `shown_as="given"` shows only whether it is set."""

    key: str
    kind: type
    help: str
    field: str | None = None
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    default_text: str | None = None
    commands: tuple[str, ...] = BOTH
    group: str | None = None
    in_file: bool = True
    in_flags: bool = True
    shown: str | None = None
    shown_as: Literal["value", "given"] = "value"
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--node" if self.key == "nodes" else "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    @property
    def default(self) -> Any:
        return None if self.field is None else resolve(DEFAULTS, self.field)

    def default_shown(self) -> str:
        """The default as --help says it."""
        if self.default_text is not None:
            return self.default_text
        value = self.default
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, ListenAddress):
            return value.display()
        return "none" if value is None else str(value)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "nodes",
        dict,
        "a node to poll: NAME=HOST:PORT, NAME=[IPV6]:PORT or NAME=/path/to/mysqld.sock; "
        "without :PORT the port is 3306 (repeat for several; NAME defaults to n1, n2, ...)",
        field="nodes",
        default_text="required",
        metavar="NAME=ADDRESS",
    ),
    Setting(
        "user",
        str,
        "MySQL user of the monitor account (USAGE is enough)",
        field="credentials.user",
        default_text="required, or user= in option_file",
        shown="user",
    ),
    Setting(
        "password_file",
        str,
        "file holding the monitor password, re-read at every reconnect",
        field="credentials.password_file",
    ),
    Setting(
        "password",
        str,
        "the monitor password itself, from the environment only",
        in_file=False,
        in_flags=False,
    ),
    Setting(
        "option_file",
        str,
        "MySQL option file whose [client] user/password to use (~/.my.cnf)",
        field="credentials.option_file",
    ),
    Setting(
        "interval",
        float,
        "seconds between polls of a node",
        field="interval",
        minimum=0.1,
        commands=SERVE,  # one poll: no schedule, no history
        shown="interval_seconds",
    ),
    Setting(
        "connect_timeout",
        int,
        "whole seconds for each step of connecting: TCP, greeting, TLS, auth",
        field="timeouts.connect",
        minimum=1,
        shown="timeouts_seconds.connect",
    ),
    Setting(
        "read_timeout",
        int,
        "whole seconds to wait for the answer to a query",
        field="timeouts.read",
        minimum=1,
        shown="timeouts_seconds.read",
    ),
    Setting(
        "write_timeout",
        int,
        "whole seconds to send a query",
        field="timeouts.write",
        minimum=1,
        shown="timeouts_seconds.write",
    ),
    Setting(
        "statement_timeout",
        float,
        "the poll session's max_statement_time: the server stops a slow poll itself",
        field="timeouts.statement",
        minimum=0.1,
        shown="timeouts_seconds.statement",
    ),
    Setting(
        "hold_down",
        float,
        "seconds a node must look healthy after a timeout before it is 200 again; 0 disables",
        field="policy.hold_down",
        minimum=0.0,
        default_text="2 x the node's evs.suspect_timeout, at least it + 2 s",
        commands=SERVE,  # one poll: no schedule, no history
        shown="policy.hold_down",
    ),
    Setting(
        "backoff_max",
        float,
        "cap of the retry backoff after access errors",
        field="backoff_max",
        minimum=0.1,
        commands=SERVE,  # one poll: no schedule, no history
        shown="backoff_max_seconds",
    ),
    Setting(
        "log_level",
        str,
        "debug, info, warning or error",
        field="log_level",
        choices=LOG_LEVELS,
        shown="log_level",
    ),
    Setting(
        "log_format",
        str,
        "text, or json: one JSON object per line",
        field="log_format",
        choices=LOG_FORMATS,
        shown="log_format",
    ),
    Setting(
        "ssl_ca",
        str,
        "CA file: verify the server's TLS certificate",
        field="tls.ca",
        shown="tls.ca",
    ),
    Setting(
        "ssl_cert",
        str,
        "client certificate (with ssl_key)",
        field="tls.cert",
        shown="tls.cert",
    ),
    Setting("ssl_key", str, "client key (with ssl_cert)", field="tls.key"),
    Setting(
        "ssl_verify_identity",
        bool,
        "check the server certificate's name against the node's host (needs ssl_ca)",
        field="tls.verify_identity",
        shown="tls.verify_identity",
    ),
    Setting(
        "available_when_donor",
        bool,
        "keep a Donor node in service if it serves queries",
        field="policy.available_when_donor",
        group=POLICY_GROUP,
        shown="policy.available_when_donor",
    ),
    Setting(
        "available_when_readonly",
        bool,
        "keep read_only=ON nodes in service, a reader pool",
        field="policy.available_when_readonly",
        group=POLICY_GROUP,
        shown="policy.available_when_readonly",
    ),
    Setting(
        "allow_standalone",
        bool,
        "accept wsrep_on=OFF, a server outside Galera",
        field="policy.allow_standalone",
        group=POLICY_GROUP,
        shown="policy.allow_standalone",
    ),
    Setting(
        "max_recv_queue",
        int,
        "wsrep_local_recv_queue above this: 503 lagging",
        field="policy.max_recv_queue",
        minimum=0,
        group=POLICY_GROUP,
        shown="policy.max_recv_queue",
    ),
    Setting(
        "min_cluster_size",
        int,
        "a smaller Primary component: 503 cluster_too_small",
        field="policy.min_cluster_size",
        minimum=1,
        group=POLICY_GROUP,
        shown="policy.min_cluster_size",
    ),
    Setting(
        "rise",
        int,
        "good polls needed to come back",
        field="policy.rise",
        minimum=1,
        group=POLICY_GROUP,
        commands=SERVE,  # one poll: no schedule, no history
        shown="policy.rise",
    ),
    Setting(
        "fall",
        int,
        "bad polls needed to go out; facts the node reports go at once",
        field="policy.fall",
        minimum=1,
        group=POLICY_GROUP,
        commands=SERVE,  # one poll: no schedule, no history
        shown="policy.fall",
    ),
    Setting(
        "fall_timeout",
        int,
        "fall for timeouts",
        field="policy.fall_timeout",
        minimum=1,
        default_text="fall",
        group=POLICY_GROUP,
        commands=SERVE,  # one poll: no schedule, no history
        shown="policy.fall_timeout",
    ),
    Setting(
        "fall_agent_error",
        int,
        "fall for the agent's own access errors",
        field="policy.fall_agent_error",
        minimum=1,
        default_text="fall",
        group=POLICY_GROUP,
        commands=SERVE,  # one poll: no schedule, no history
        shown="policy.fall_agent_error",
    ),
    Setting(
        "listen",
        str,
        "HOST:PORT to serve HTTP on ([::]:9200 for IPv6)",
        field="listen",
        commands=SERVE,
        shown="listen",
    ),
    Setting(
        "max_age",
        float,
        "seconds after which a verdict is stale (503)",
        field="max_age_setting",
        minimum=0.1,
        default_text="3 x interval + connect_timeout + read_timeout",
        commands=SERVE,
    ),
    Setting(
        "stuck_after",
        float,
        "seconds a poll may run before /livez reports the poller stuck",
        field="stuck_after",
        minimum=1.0,
        commands=SERVE,
        shown="stuck_after_seconds",
    ),
    Setting(
        "drain_seconds",
        float,
        "on SIGTERM, answer 503 draining this long, still serving, then exit",
        field="drain_seconds",
        minimum=0.0,
        commands=SERVE,
        shown="drain_seconds",
    ),
    Setting(
        "state_dir",
        str,
        "directory of maintenance files",
        field="state_dir",
        commands=SERVE,
        shown="state_dir",
    ),
    Setting(
        "kill_sessions",
        bool,
        "after a drain or maintenance, kill the node's client sessions",
        field="kill_sessions",
        commands=SERVE,
        shown="kill_sessions",
    ),
    Setting(
        "kill_sessions_after",
        float,
        "seconds after a drain or maintenance began to kill sessions",
        field="kill_sessions_after",
        minimum=0.0,
        commands=SERVE,
        shown="kill_sessions_after_seconds",
    ),
    Setting(
        "status_listen",
        str,
        "serve /status, /metrics and the page here only, not on listen",
        field="status_listen",
        commands=SERVE,
        shown="status_listen",
    ),
    Setting(
        "status_token_file",
        str,
        "require this bearer token for /status and /metrics; the probes and the page at / "
        "never need it (the page's own fetch of /status does)",
        field="status_token_file",
        commands=SERVE,
        shown="status_token",
        shown_as="given",
    ),
    Setting(
        "status_tls_cert",
        str,
        "serve status_listen over HTTPS: certificate",
        field="status_tls_cert",
        commands=SERVE,
        shown="status_tls",
        shown_as="given",
    ),
    Setting(
        "status_tls_key",
        str,
        "serve status_listen over HTTPS: private key",
        field="status_tls_key",
        commands=SERVE,
    ),
    Setting(
        "agent_check_listen",
        str,
        "HOST:PORT for HAProxy's agent-check (up ready / drain / down #reason)",
        field="agent_check_listen",
        commands=SERVE,
        shown="agent_check_listen",
    ),
    Setting(
        "writer",
        bool,
        "take part in electing one writer through a lease row in the cluster and answer "
        "/writer (needs CREATE, ALTER, SELECT, INSERT, UPDATE ON galera_health.*)",
        field="writer",
        commands=SERVE,
        shown="writer.enabled",
    ),
    Setting(
        "writer_priority",
        int,
        "with writer: a node of higher priority takes the role back from a healthy writer of "
        "lower priority (failback); 0 never asks for it",
        field="writer_priority",
        minimum=0,
        commands=SERVE,
        shown="writer.priority",
    ),
    Setting(
        "writer_takeover",
        float,
        "with writer: seconds the lease must stand still before another node takes over",
        field="writer_takeover_setting",
        minimum=0.1,
        default_text="max(interval, 1 s) + 2 s",
        commands=SERVE,
    ),
    Setting(
        "kubernetes_pod_label",
        str,
        "with writer, in a pod: the label key the agent sets to writer or standby on its own "
        "pod (POD_NAME, POD_NAMESPACE), through the API with the pod's service account; "
        "empty: off",
        field="kubernetes_pod_label",
        default_text="off",
        commands=SERVE,
        shown="kubernetes.pod_label",
    ),
    Setting(
        "kubernetes_api_url",
        str,
        "with kubernetes_pod_label: the API server's https URL",
        field="kubernetes_api_url",
        default_text="in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT",
        commands=SERVE,
        shown="kubernetes.api_url",
    ),
    Setting(
        "kubernetes_token_file",
        str,
        "with kubernetes_pod_label: the service account token, re-read at every call",
        field="kubernetes_token_file",
        commands=SERVE,
        shown="kubernetes.token_file",
    ),
    Setting(
        "kubernetes_ca_file",
        str,
        "with kubernetes_pod_label: the CA that signed the API server's certificate",
        field="kubernetes_ca_file",
        commands=SERVE,
        shown="kubernetes.ca_file",
    ),
    Setting(
        "datadir",
        str,
        "the node's datadir: read grastate.dat, gvwstate.dat and wsrep-recover.log (read-only, "
        "in the background) and serve them on /recovery; an agent of one node only",
        field="datadir",
        commands=SERVE,
        shown="recovery.datadir",
    ),
    Setting(
        "recovery_peers",
        str,
        "NAME=URL,... of every node's agent (this one's too): /recovery then carries the "
        "whole-cluster recovery decision, as `galera-health recover` would print it",
        field="recovery_peers",
        commands=SERVE,
        shown="recovery.peers",
    ),
    Setting(
        "writer_user",
        str,
        "with writer: the MySQL account the lease runs as (CREATE, ALTER, SELECT, INSERT, "
        "UPDATE ON galera_health.* and SELECT ON mysql.wsrep_cluster_members), so the monitor "
        "account stays USAGE-only",
        field="writer_user",
        default_text="the monitor account",
        shown="writer.user",
        commands=SERVE,
    ),
    Setting(
        "writer_password_file",
        str,
        "file holding writer_user's password, re-read at every reconnect",
        field="writer_password_file",
        commands=SERVE,
    ),
    Setting(
        "writer_users",
        str,
        "with writer: comma-separated client accounts whose sessions are killed "
        "writer_kill_grace s after this node stops being the writer (needs PROCESS and "
        "CONNECTION ADMIN for writer_user); empty: never",
        field="writer_users_setting",
        default_text="none",
        commands=SERVE,
        shown="writer.users",
    ),
    Setting(
        "writer_kill_grace",
        float,
        "with writer_users: seconds after the node stops being the writer before its "
        "writer_users' sessions are killed (past the load balancer's detection time)",
        field="writer_kill_grace",
        minimum=0.0,
        commands=SERVE,
        shown="writer.kill_grace_seconds",
    ),
    Setting(
        "writer_password",
        str,
        "writer_user's password itself, from the environment only",
        in_file=False,
        in_flags=False,
        commands=SERVE,
    ),
)
KEYS: dict[str, Setting] = {setting.key: setting for setting in SETTINGS}

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
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(f"{where} must be a finite number")  # before int(): int(nan) raises
    if spec.kind is int and number != int(number):
        raise ConfigError(f"{where} must be a whole number of seconds (the driver's unit)")
    if spec.minimum is not None and number < spec.minimum:
        raise ConfigError(f"{where} must be at least {spec.minimum:g}, got {number:g}")
    return int(number) if spec.kind is int else float(number)


def near_key(unknown: str, known: Sequence[str]) -> str | None:
    """The known key a misspelt one most likely meant (`intervall` -> `interval`), or None."""
    unknown = unknown.lower()
    started = [k for k in known if k.startswith(unknown)]
    if len(started) == 1:
        return started[0]
    near = difflib.get_close_matches(unknown, known, n=1, cutoff=0.6)
    return near[0] if near else None


def did_you_mean(near: str | None) -> str:
    return f"; did you mean {near}?" if near else f"; {KEYS_LISTED}"


KEYS_LISTED = "the keys are listed in README.md (Configuration) and by galera-health serve --help"


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
                else "; put it in writer_password_file or GALERA_HEALTH_WRITER_PASSWORD"
                if key == "writer_password"
                else did_you_mean(near_key(key, [k for k, s in KEYS.items() if s.in_file]))
            )
            raise ConfigError(f"unknown key {key!r} in config file {path!r}{hint}")
        if key == "nodes":
            if not isinstance(value, dict) or not value:
                raise ConfigError(
                    f'nodes in {path!r} must be a table like [nodes] n1 = "127.0.0.1:3306"'
                )
            nodes = []
            for name, address in value.items():
                if name in KEYS or name == "config":
                    # TOML puts every key after [nodes] into the table; the value is never shown
                    hint = (
                        "put the password in password_file or GALERA_HEALTH_PASSWORD"
                        if name == "password"
                        else "move it above the [nodes] table"
                    )
                    raise ConfigError(
                        f"[nodes] in {path!r} has a key {name!r}, which is a setting, not a node "
                        f"(every key after [nodes] belongs to it); {hint}"
                    )
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
            near = near_key(key, [*KEYS, "config"])
            raise ConfigError(
                f"unknown environment variable {name}"
                + did_you_mean(ENV_PREFIX + near.upper() if near else None)
            )
        if key == "nodes":
            specs = [s for s in value.split(",") if s.strip()]
            raw[key] = [parse_node(s, i, name) for i, s in enumerate(specs, 1)]
        elif key in ("password", "writer_password"):
            raw[key + "_env"] = name
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
    for key in ("password_file", "writer_password_file"):
        path = raw.get(key)
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"cannot read {key} {path!r}; check the path and its permissions")
    writer_user = raw.get("writer_user")
    writer_password_given = raw.get("writer_password_file") or raw.get("writer_password_env")
    if writer_user and not writer_password_given:
        raise ConfigError(
            f"writer_user {writer_user!r} has no password; give writer_password_file or "
            "GALERA_HEALTH_WRITER_PASSWORD"
        )
    if not writer_user and writer_password_given:
        raise ConfigError(
            "a writer password without writer_user; give writer_user (the lease's account)"
        )
    check_writer_users(raw, user, writer_user)
    listen = DEFAULTS.listen
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

    if raw.get("datadir") is not None and len(nodes) != 1:
        raise ConfigError(
            f"datadir needs an agent of exactly one node (this one has {len(nodes)}): it is "
            "that node's datadir; run one agent per node, or leave datadir out"
        )
    if raw.get("recovery_peers") is not None:
        parse_agents(raw["recovery_peers"].split(","), "recovery_peers")

    for setting in SETTINGS:
        if setting.choices and setting.key in raw:
            word = str(raw[setting.key]).lower()
            if word not in setting.choices:
                raise ConfigError(
                    f"{setting.key} must be one of {', '.join(setting.choices)}, got {word!r}"
                )
            raw[setting.key] = word

    values = {s.field: raw[s.key] for s in SETTINGS if s.field is not None and s.key in raw}
    values.update(
        {
            "nodes": tuple(nodes),
            "credentials.user": user,
            "credentials.password_env": raw.get("password_env"),
            "writer_user": writer_user or None,
            "writer_password_env": raw.get("writer_password_env"),
            # kept only where the password comes from: user= alone was taken above
            "credentials.option_file": raw.get("option_file")
            if "password" in option_values
            else None,
            "listen": listen,
            "status_listen": status_listen,
            "agent_check_listen": agent_check_listen,
            "config_path": raw.get("config_path"),
        }
    )
    settings = assemble(values)
    timeouts = settings.timeouts
    if timeouts.statement >= timeouts.read:
        raise ConfigError(
            f"statement_timeout ({timeouts.statement:g}) must be below read_timeout "
            f"({timeouts.read}) so the server ends a slow query before the client gives up"
        )
    if settings.writer_takeover < settings.writer_validity + LEASE_MARGIN:
        raise ConfigError(
            f"writer_takeover ({settings.writer_takeover:g}) must be at least "
            f"{settings.writer_validity + LEASE_MARGIN:g} s (max(interval, 1 s) + "
            f"{LEASE_STATEMENT_TIMEOUT + HEALTHY_GRACE + LEASE_MARGIN:g} s): the writer answers "
            f"200 up to {settings.writer_validity:g} s after its last renewal, and a take-over "
            "before that would make two writers; raise it or leave it out"
        )
    check_pod_label(settings)
    return settings


# A label key: an optional DNS-subdomain prefix and '/', then a name of 1-63 characters
# (Kubernetes' "Syntax and character set" of labels).
LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
LABEL_PREFIX_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def check_pod_label(settings: Settings) -> None:
    """kubernetes_pod_label labels one pod with one node's role: it needs writer, exactly one
    node (the pod's own) and a valid label key."""
    key = settings.kubernetes_pod_label
    if not key:
        return
    prefix, _, name = key.rpartition("/")
    if (
        not LABEL_NAME_RE.match(name)
        or (prefix and (len(prefix) > 253 or not LABEL_PREFIX_RE.match(prefix)))
        or (not prefix and "/" in key)
    ):
        raise ConfigError(
            f"kubernetes_pod_label {key!r} is not a Kubernetes label key; use e.g. "
            "galera-health/role (an optional DNS prefix and '/', then 1-63 letters, digits, "
            "'-', '_' or '.')"
        )
    if not settings.writer:
        raise ConfigError("kubernetes_pod_label needs writer = true (it labels the writer's pod)")
    if len(settings.nodes) != 1:
        raise ConfigError(
            f"kubernetes_pod_label labels the agent's own pod, so the agent must watch exactly "
            f"one node (its pod's), not {len(settings.nodes)}; run one agent per pod"
        )
    url = settings.kubernetes_api_url
    if url is not None and not url.startswith("https://"):
        raise ConfigError(
            f"kubernetes_api_url {url!r} must be an https:// URL (the token is never sent in clear)"
        )


def check_writer_users(raw: Mapping[str, Any], user: str, writer_user: str | None) -> None:
    """writer_users names client accounts only: never the agent's own (it would kill the
    lease's connection or the poll's), and only with the election on."""
    names = [u.strip() for u in str(raw.get("writer_users") or "").split(",") if u.strip()]
    if not names:
        return
    if not raw.get("writer"):
        raise ConfigError(
            "writer_users needs writer = true (the sessions close on losing the role)"
        )
    own = {user, writer_user or user}
    for name in names:
        if name in own:
            raise ConfigError(
                f"writer_users names the agent's own account {name!r}; list only the "
                "applications' accounts"
            )
        if name in ("root", "system user", "event_scheduler"):
            raise ConfigError(f"writer_users must not name {name!r}; list only client accounts")


def assemble(values: Mapping[str, Any]) -> Settings:
    """Settings from {dotted field: value}; every field not given keeps its default."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[head] = value
    for head, fields in nested.items():
        top[head] = replace(getattr(DEFAULTS, head), **fields)
    return replace(DEFAULTS, **top)


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


# --- showing the effective settings -----------------------------------------------------


def password_source(settings: Settings, credentials: Credentials | None = None) -> str:
    """Where the password comes from, never what it is."""
    credentials = credentials or settings.credentials
    if credentials.password_file is not None:
        return f"password_file {credentials.password_file}"
    if credentials.password_env is not None:
        return f"environment {credentials.password_env}"
    if credentials.option_file is not None:
        return f"option_file {credentials.option_file}"
    return "none"


def shown_value(value: Any) -> Any:
    if isinstance(value, (ListenAddress, NodeAddress)):
        return value.display()
    return value


def describe(settings: Settings) -> dict[str, Any]:
    """The effective configuration, safe to show (the start line at debug, /status): each
    setting where its description says, the user name but never a password."""
    document: dict[str, Any] = {
        "password_source": password_source(settings),
        "nodes": {n.name: n.display() for n in settings.nodes},
    }
    for setting in SETTINGS:
        if setting.shown is None or setting.field is None:
            continue
        value = resolve(settings, setting.field)
        *parents, name = setting.shown.split(".")
        place = document
        for parent in parents:
            place = place.setdefault(parent, {})
        place[name] = value is not None if setting.shown_as == "given" else shown_value(value)
    document.update(
        max_age_seconds=settings.max_age,
        healthy_max_age_seconds=settings.healthy_max_age,
        config_path=settings.config_path,
        driver_mode=DRIVER_MODE,
    )
    document["writer"].update(
        interval_seconds=settings.writer_interval,
        takeover_seconds=settings.writer_takeover,
        validity_seconds=settings.writer_validity,
        user=settings.writer_credentials.user,
        password_source=password_source(settings, settings.writer_credentials),
        users=list(settings.writer_users),
    )
    return document
