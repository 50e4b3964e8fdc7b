"""`galera-health serve | check | demo`: argument parsing, logging set-up, exit codes.

Exit codes: 0 fine; 1 a node is unhealthy (check); 2 a user error (bad config, unreadable
password file, port in use) or an agent-side access error (check), always with one clear line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from . import __version__
from .config import KEYS, ConfigError, Settings, load_settings
from .logs import setup_logging
from .probe import DRIVER_MODE, NodeProbe
from .verdict import Policy, evaluate

log = logging.getLogger("galera_health")


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    parser.add_argument(
        "--node",
        dest="nodes",
        action="append",
        metavar="NAME=ADDRESS",
        help="a node to poll: NAME=HOST:PORT, NAME=[IPV6]:PORT or NAME=/path/to/mysqld.sock "
        "(repeat for several; NAME defaults to n1, n2, ...)",
    )
    parser.add_argument("--user", help="MySQL user of the monitor account (USAGE is enough)")
    parser.add_argument("--password-file", help="file holding the monitor password")
    parser.add_argument(
        "--option-file", help="MySQL option file whose [client] user/password to use (~/.my.cnf)"
    )
    parser.add_argument("--interval", help="seconds between polls of a node (default 1)")
    parser.add_argument("--connect-timeout", help="whole seconds for connect+greeting+auth (2)")
    parser.add_argument("--read-timeout", help="whole seconds to wait for a query answer (2)")
    parser.add_argument("--write-timeout", help="whole seconds to send a query (2)")
    parser.add_argument(
        "--statement-timeout", help="server-side max_statement_time of the poll (1)"
    )
    parser.add_argument("--hold-down", help="seconds of health needed after a timeout")
    parser.add_argument("--backoff-max", help="cap of the retry backoff after access errors (30)")
    parser.add_argument("--log-level", help="debug, info, warning or error (info)")
    parser.add_argument("--log-format", help="text or json: one JSON object per line (text)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galera-health",
        description="HTTP health agent for MariaDB Galera nodes (cached verdicts, fail closed).",
    )
    parser.add_argument("--version", action="version", version=f"galera-health {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="poll nodes and answer HTTP probes")
    add_connection_options(serve)
    serve.add_argument("--listen", help="HOST:PORT to serve on (default 0.0.0.0:9200)")
    serve.add_argument("--max-age", help="seconds after which a verdict is stale (503)")
    serve.add_argument(
        "--stuck-after", help="seconds a poll may run before /livez reports it stuck (60)"
    )

    check = commands.add_parser("check", help="poll each node once, print verdicts, exit 0/1/2")
    add_connection_options(check)

    demo = commands.add_parser("demo", help="start a local 3-node Galera cluster with agents")
    demo.add_argument("--size", type=int, default=3, help="number of Galera nodes (3)")
    demo.add_argument("--port", type=int, default=9200, help="first agent port (9200)")
    return parser


def flags_from(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, key, None) for key in KEYS if hasattr(args, key)}


def fail(message: str) -> int:
    print(f"galera-health: error: {message}", file=sys.stderr)
    return 2


def password_source(settings: Settings) -> str:
    """Where the password comes from, never what it is."""
    credentials = settings.credentials
    if credentials.password_file is not None:
        return f"password_file {credentials.password_file}"
    if credentials.password_env is not None:
        return f"environment {credentials.password_env}"
    if credentials.option_file is not None:
        return f"option_file {credentials.option_file}"
    return "none"


def describe(settings: Settings) -> dict[str, Any]:
    """The effective configuration, safe to show: the user name, never a password."""
    return {
        "user": settings.credentials.user,
        "password_source": password_source(settings),
        "nodes": {n.name: n.display() for n in settings.nodes},
        "interval_seconds": settings.interval,
        "max_age_seconds": settings.max_age,
        "timeouts_seconds": {
            "connect": settings.timeouts.connect,
            "read": settings.timeouts.read,
            "write": settings.timeouts.write,
            "statement": settings.timeouts.statement,
        },
        "hold_down_seconds": settings.hold_down,
        "backoff_max_seconds": settings.backoff_max,
        "stuck_after_seconds": settings.stuck_after,
        "listen": settings.listen.display(),
        "log_level": settings.log_level,
        "log_format": settings.log_format,
        "driver_mode": DRIVER_MODE,
    }


def serve(settings: Settings) -> int:
    from waitress.server import create_server

    from .poller import Poller
    from .store import VerdictStore
    from .web import SERVER_SETTINGS, create_app

    store = VerdictStore([n.name for n in settings.nodes], settings.max_age)
    poller = Poller(settings, store)
    app = create_app(
        store,
        poller.liveness,
        lambda: describe(settings),
        policy=poller.policy,
        stats=poller.stats(),
    )
    listen = settings.listen.display()
    try:
        server = create_server(app, listen=listen, **SERVER_SETTINGS)
    except OSError as exc:
        return fail(
            f"cannot listen on {listen}: {exc.strerror or exc}; "
            "choose another --listen or stop what uses that port"
        )

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    poller.start()
    config = describe(settings)
    log.info(
        "serving on http://%s; effective config: %s",
        listen,
        json.dumps(config, separators=(",", ":")),
        extra={"event": "start", "version": __version__, "config": config},
    )
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        poller.stop()
        server.close()
    log.info("stopped")
    return 0


def check(settings: Settings) -> int:
    """One poll per node, like an exec probe: 0 all healthy, 1 a node unhealthy, 2 our error."""
    worst = 0
    for address in settings.nodes:
        probe = NodeProbe(
            address,
            settings.credentials,
            settings.timeouts,
            settings.interval,
            settings.backoff_max,
        )
        started = time.monotonic()
        observation = probe.poll()
        probe.close()
        finished = time.monotonic()
        verdict = evaluate(
            observation,
            Policy(hold_down=settings.hold_down),
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
        from .demo import run_demo

        return run_demo(size=args.size, first_port=args.port)
    try:
        settings = load_settings(
            flags_from(args),
            os.environ,
            config_path=args.config,
            need_listen=args.command == "serve",
        )
    except ConfigError as exc:
        return fail(str(exc))
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        return serve(settings)
    return check(settings)
