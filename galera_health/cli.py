"""`galera-health serve | check | maintenance | writer | demo`: argument parsing, logging, exit
codes.

Exit codes: 0 fine; 1 a node is unhealthy (check), or the writer role cannot be handed over /
nobody holds it (writer); 2 a user error (bad config, unreadable
password file, port in use) or an agent-side access error (check), always with one clear line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from . import __version__
from .config import (
    ENV_PREFIX,
    KEYS,
    NODE_NAME_RE,
    SETTINGS,
    ConfigError,
    Settings,
    describe,
    load_settings,
    raw_from_toml,
)
from .logs import setup_logging
from .poller import log_transition
from .probe import probe_for
from .verdict import evaluate

log = logging.getLogger("galera_health")


def add_setting_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """One flag per setting the command takes, from its description in config.SETTINGS.
    Values stay text here: config.coerce types them, so a bad one is the same one line as in
    the file or the environment."""
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    groups: dict[str, Any] = {}
    for setting in SETTINGS:
        if not setting.in_flags or command not in setting.commands:
            continue
        target: Any = parser
        if setting.group is not None:
            if setting.group not in groups:
                groups[setting.group] = parser.add_argument_group(setting.group)
            target = groups[setting.group]
        text = f"{setting.help} (default: {setting.default_shown()})".replace("%", "%%")
        if setting.kind is bool:
            target.add_argument(
                setting.flag, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        elif setting.key == "nodes":
            target.add_argument(
                setting.flag, dest="nodes", action="append", metavar=setting.metavar, help=text
            )
        else:
            target.add_argument(setting.flag, metavar=setting.metavar, help=text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galera-health",
        description="HTTP health agent for MariaDB Galera nodes (cached verdicts, fail closed).",
    )
    parser.add_argument("--version", action="version", version=f"galera-health {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="poll nodes and answer HTTP probes")
    add_setting_flags(serve, "serve")
    check = commands.add_parser("check", help="poll each node once, print verdicts, exit 0/1/2")
    add_setting_flags(check, "check")

    switch = commands.add_parser(
        "maintenance", help="put nodes in or out of maintenance (503 at once, kept on restart)"
    )
    switch.add_argument("action", choices=("on", "off", "status"))
    switch.add_argument("--node", help="one node by name (default: every node of the agent)")
    switch.add_argument("--reason", default="", help="why, shown in /status and the logs")
    switch.add_argument("--state-dir", help="the agent's state_dir (or from --config / env)")
    switch.add_argument("--config", metavar="FILE", help="the agent's TOML config file")

    writer = commands.add_parser(
        "writer", help="the writer role: who holds it, or a planned hand-over to a node"
    )
    writer_commands = writer.add_subparsers(dest="writer_command", required=True)
    writer_status = writer_commands.add_parser(
        "status", help="print who holds the writer role (exit 1: nobody)"
    )
    add_setting_flags(writer_status, "serve")
    handover = writer_commands.add_parser(
        "handover",
        help="hand the writer role to NODE through the lease row; exit 0 once NODE answers "
        "/writer 200, 1 when it cannot (NODE unusable, no holder, timeout)",
    )
    handover.add_argument("--to", required=True, metavar="NODE", help="a node of these settings")
    handover.add_argument(
        "--timeout", type=float, default=15.0, help="seconds to wait for NODE's /writer 200 (15)"
    )
    add_setting_flags(handover, "serve")

    demo = commands.add_parser("demo", help="start a local 3-node Galera cluster with agents")
    demo.add_argument("--size", type=int, default=3, help="number of Galera nodes (3)")
    demo.add_argument("--port", type=int, default=9200, help="first agent port (9200)")
    demo_commands = demo.add_subparsers(dest="demo_command", metavar="fault")
    fault = demo_commands.add_parser(
        "fault", help="break or mend a node of the running demo by name: demo fault freeze n3"
    )
    fault.add_argument("action", help="freeze/thaw, split/heal, desync/resync, stop/start, ...")
    fault.add_argument("node", help="the node's name: n1, n2, ...")
    return parser


def flags_from(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, key, None) for key in KEYS if hasattr(args, key)}


def fail(message: str) -> int:
    print(f"galera-health: error: {message}", file=sys.stderr)
    return 2


def summary(config: dict[str, Any]) -> dict[str, Any]:
    """The part of describe()'s document the start line shows at info: what is watched, as
    whom, where."""
    return {key: config[key] for key in ("nodes", "user", "password_source", "listen")}


def maintenance_command(args: argparse.Namespace) -> int:
    """Writes the maintenance file the agent watches: the local channel to a running agent."""
    from . import maintenance

    state_dir = args.state_dir or os.environ.get(ENV_PREFIX + "STATE_DIR")
    path = args.config or os.environ.get(ENV_PREFIX + "CONFIG")
    if state_dir is None and path:
        try:
            state_dir = raw_from_toml(path).get("state_dir")
        except ConfigError as exc:
            return fail(str(exc))
    if not state_dir:
        return fail("no state_dir; give --state-dir DIR (the agent's state_dir) or --config FILE")
    if not os.path.isdir(state_dir):
        return fail(f"state_dir {state_dir!r} is not a directory; check the path")
    if args.node is not None and not NODE_NAME_RE.match(args.node):
        return fail(f"node name {args.node!r} is not a valid node name")
    if args.action == "status":
        for name in sorted(os.listdir(state_dir)):
            if name == maintenance.ALL_NODES_FILE or name.startswith("maintenance."):
                record = maintenance.read_one(os.path.join(state_dir, name))
                if record is not None:
                    print(f"{name}: {record.description}")
        return 0
    try:
        written = maintenance.switch(state_dir, args.node, args.action == "on", args.reason)
    except OSError as exc:
        return fail(f"cannot change {state_dir!r}: {exc.strerror}; run as a user who may write it")
    target = f"node {args.node}" if args.node else "every node"
    print(f"maintenance {args.action} for {target} ({written})")
    return 0


def writer_command(args: argparse.Namespace, settings: Settings) -> int:
    """`writer status | handover --to NODE` with the agent's own settings (exit codes above)."""
    from .handover import HandoverError, handover, status

    if not settings.writer:
        return fail("these settings have writer off; give the agent's config (writer = true)")
    try:
        if args.writer_command == "status":
            return status(settings)
        if args.to not in {a.name for a in settings.nodes}:
            names = ", ".join(a.name for a in settings.nodes)
            return fail(
                f"node {args.to!r} is not in these settings' nodes ({names}); run it beside "
                "the agent that watches it, with its config"
            )
        if not args.timeout > 0:
            return fail("--timeout must be a positive number of seconds")
        return handover(settings, args.to, args.timeout)
    except HandoverError as exc:
        print(f"galera-health: {exc}", file=sys.stderr)
        return 1


def serve(settings: Settings, reload_settings: Callable[[], Settings] | None = None) -> int:
    from waitress.server import create_server

    from .poller import Poller
    from .store import VerdictStore
    from .web import SERVER_SETTINGS, create_app

    raise_open_files_limit()
    warn_if_readable_by_others(settings)
    try:
        status_token = read_token(settings.status_token_file)
    except OSError as exc:
        return fail(f"cannot read status_token_file: {exc.strerror}")
    store = VerdictStore(
        [n.name for n in settings.nodes],
        settings.max_age,
        healthy_max_age=settings.healthy_max_age,
    )
    poller = Poller(settings, store, reload_settings=reload_settings)

    def app_for(surface: str) -> Any:
        return create_app(
            store,
            poller.liveness,
            lambda: describe(poller.settings),
            policy=lambda: poller.policy,
            stats=poller.stats(),
            surface=surface,
            status_token=status_token,
        )

    separate = settings.status_listen is not None
    servers: list[Any] = []
    for surface, address in (
        ("probe" if separate else "all", settings.listen),
        ("status", settings.status_listen),
    ):
        if address is None:
            continue
        try:
            if surface == "status" and settings.status_tls_cert is not None:
                servers.append(TlsStatusServer(settings, app_for(surface)))
            else:
                servers.append(
                    create_server(app_for(surface), listen=address.display(), **SERVER_SETTINGS)
                )
        except (OSError, ssl.SSLError) as exc:
            for made in servers:
                made.close()
            return fail(
                f"cannot listen on {address.display()}: {exc.strerror or exc}; "
                "choose another address or stop what uses that port"
            )
    server = servers[0]
    listen = settings.listen.display()
    agent_check = None
    if settings.agent_check_listen is not None:
        from .agent_check import AgentCheckServer

        address = settings.agent_check_listen
        try:
            agent_check = AgentCheckServer(store, address.host, address.port)
        except OSError as exc:
            for made in servers:
                made.close()
            return fail(
                f"cannot listen on {address.display()} (agent_check_listen): {exc.strerror}; "
                "choose another address or stop what uses that port"
            )

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    def drain(signum: int, _frame: FrameType | None) -> None:
        """SIGTERM: answer 503 draining long enough for the LB to see it, still serving, then
        exit 0. A second SIGTERM (or SIGINT) exits at once."""
        seconds = poller.settings.drain_seconds
        if store.draining is not None or seconds <= 0:
            raise SystemExit(0)
        reason = f"agent stopping, exit in {seconds:g} s"
        for transition in store.start_drain(reason):
            log_transition(transition)
        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def reload(signum: int, _frame: FrameType | None) -> None:
        poller.request_reload()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    poller.start()
    config = describe(settings)
    log.debug(
        "effective config: %s",
        json.dumps(config, separators=(",", ":")),
        extra={"event": "config", "config": config},
    )
    short = summary(config)
    log.info(
        "serving on http://%s%s; nodes %s; user %s (password from %s); "
        "full config at log_level debug and in /status",
        listen,
        (
            f" (status on {'https' if settings.status_tls_cert else 'http'}://"
            f"{settings.status_listen.display()})"
        )
        if settings.status_listen
        else "",
        ", ".join(f"{name}={address}" for name, address in short["nodes"].items()),
        short["user"],
        short["password_source"],
        extra={"event": "start", "version": __version__, "config": short},
    )
    for extra in servers[1:]:
        threading.Thread(target=extra.run, name="status-listener", daemon=True).start()
    if agent_check is not None:
        agent_check.start()
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        poller.stop()
        for made in servers:
            made.close()
        if agent_check is not None:
            agent_check.close()
    log.info("stopped")
    return 0


class TlsStatusServer:
    """The status listener over HTTPS. waitress has no TLS, so this one listener (a management
    surface, not the LB's probe path) is served by cheroot, imported only when configured."""

    def __init__(self, settings: Settings, app: Any) -> None:
        from cheroot import wsgi
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        assert settings.status_listen is not None
        assert settings.status_tls_cert is not None and settings.status_tls_key is not None
        # fail here, with the file named, rather than in cheroot's thread
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.status_tls_cert, settings.status_tls_key
        )
        self.server = wsgi.Server(
            (settings.status_listen.host, settings.status_listen.port),
            app,
            numthreads=4,
            max=64,
            timeout=10,
            shutdown_timeout=1,
            server_name="galera-health",
        )
        self.server.ssl_adapter = BuiltinSSLAdapter(
            settings.status_tls_cert, settings.status_tls_key
        )
        self.server.prepare()  # binds now: a port in use is reported at start

    def run(self) -> None:
        self.server.serve()

    def close(self) -> None:
        self.server.stop()


def raise_open_files_limit() -> None:
    """waitress may hold up to connection_limit sockets: don't let a 1024 soft limit be what
    a connection storm runs into first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def warn_if_readable_by_others(settings: Settings) -> None:
    for key, path in (
        ("password_file", settings.credentials.password_file),
        ("option_file", settings.credentials.option_file),
        ("status_token_file", settings.status_token_file),
    ):
        if path is None:
            continue
        try:
            mode = os.stat(os.path.expanduser(path)).st_mode
        except OSError:
            continue
        if mode & 0o004:
            log.warning(
                "%s %s is readable by every user (mode %o); chmod 600 it",
                key,
                path,
                mode & 0o777,
                extra={"event": "insecure_file", "key": key},
            )


def read_token(path: str | None) -> str | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        token = handle.read().strip()
    return token or None


def check(settings: Settings) -> int:
    """One poll per node, like an exec probe: 0 all healthy, 1 a node unhealthy, 2 our error."""
    worst = 0
    for address in settings.nodes:
        probe = probe_for(settings.node(address))
        started = time.monotonic()
        observation = probe.poll()
        probe.close()
        finished = time.monotonic()
        verdict = evaluate(
            observation,
            settings.policy,
            None,
            address.name,
            finished,
            time.time(),
            finished - started,
        )
        print(f"{address.name}: {verdict.reason}")
        code = 0 if verdict.healthy else 2 if verdict.fault == "agent" else 1
        worst = max(worst, code)
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        try:
            from . import demo
        except ImportError:  # left out of the container image: it has no MariaDB to run
            return fail("the demo is not in this installation (it needs MariaDB): ./scripts/demo")
        if args.demo_command == "fault":
            return demo.run_fault(args.action, args.node)
        return demo.run_demo(size=args.size, first_port=args.port)
    if args.command == "maintenance":
        return maintenance_command(args)

    def load() -> Settings:
        return load_settings(
            flags_from(args),
            os.environ,
            config_path=args.config,
            need_listen=args.command in ("serve", "writer"),
        )

    try:
        settings = load()
    except ConfigError as exc:
        return fail(str(exc))
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "writer":
        return writer_command(args, settings)
    if args.command == "serve":
        return serve(settings, reload_settings=load)
    return check(settings)
