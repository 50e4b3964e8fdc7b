"""`galera-health serve | check | maintenance | recover | writer | demo`: argument parsing,
logging, exit codes.

Exit codes: 0 fine; 1 a node is unhealthy (check), recover refuses, or the writer role cannot be
handed over / nobody holds it (writer); 2 a user error (bad config, unreadable password file,
port in use) or an agent-side access error (check), always with one clear line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import FrameType
from typing import Any, NoReturn

from . import __version__
from .config import (
    ENV_PREFIX,
    KEYS,
    NODE_NAME_RE,
    SETTINGS,
    ConfigError,
    Settings,
    load_settings,
    parse_agents,
    raw_from_env,
    raw_from_toml,
)
from .logs import setup_logging
from .probe import probe_for
from .recovery import Decision, NodeReport
from .service import Agent, StartError, read_token
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


class Parser(argparse.ArgumentParser):
    """No abbreviations (`--password x` would become `--password-file x`), and a usage error is
    one line, exit 2. Subcommands get the same class (add_subparsers' default)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if re.search(r"(^|\s)--password(=|\s|$)", message):
            message += f"; a password is never a flag: use --password-file or {PASSWORD_ENV}"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class DemoFaultParser(Parser):
    """`demo fault --help` lists every fault from the demo's own table, imported for the help
    only (serve never loads the demo, and the container image leaves it out)."""

    def format_help(self) -> str:
        try:
            from .demo import FAULTS
        except ImportError:
            return super().format_help()
        self.epilog = "faults:\n" + "\n".join(
            f"  {name:9} {what}" for name, (what, _) in FAULTS.items()
        )
        return super().format_help()


PASSWORD_ENV = KEYS["password"].env
CREDENTIALS_EPILOG = (
    f"{PASSWORD_ENV}: {KEYS['password'].help} (a Kubernetes Secret); otherwise --password-file "
    "or --option-file. Every setting is also GALERA_HEALTH_<KEY> in the environment and <key> in "
    "the --config file (flags win over the environment, which wins over the file)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="galera-health",
        description="HTTP health agent for MariaDB Galera nodes (cached verdicts, fail closed).",
    )
    parser.add_argument("--version", action="version", version=f"galera-health {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="poll nodes and answer HTTP probes", epilog=CREDENTIALS_EPILOG
    )
    add_setting_flags(serve, "serve")
    check = commands.add_parser(
        "check", help="poll each node once, print verdicts, exit 0/1/2", epilog=CREDENTIALS_EPILOG
    )
    add_setting_flags(check, "check")

    switch = commands.add_parser(
        "maintenance", help="put nodes in or out of maintenance (503 at once, kept on restart)"
    )
    switch.add_argument("action", choices=("on", "off", "status"))
    switch.add_argument(
        "--node", help="one of the agent's nodes by name (default: every node of the agent)"
    )
    switch.add_argument("--reason", default="", help="why, shown in /status and the logs")
    switch.add_argument(
        "--state-dir",
        help="the agent's state_dir (default: GALERA_HEALTH_STATE_DIR, then the --config file's)",
    )
    switch.add_argument(
        "--config",
        metavar="FILE",
        help="the agent's TOML config file (or GALERA_HEALTH_CONFIG): its state_dir and nodes",
    )

    recover = commands.add_parser(
        "recover",
        help="the whole cluster is down: ask every node's agent which node may bootstrap "
        "(prints the decision; starts and stops nothing); exit 0 decided, 1 refused",
    )
    recover.add_argument(
        "--agent",
        action="append",
        metavar="NAME=URL",
        help="a node's agent (its base URL, e.g. n1=http://10.0.0.1:9200); name every node",
    )
    recover.add_argument(
        "--assume-lost",
        action="append",
        default=[],
        metavar="NAME",
        help="a node whose agent cannot answer and whose data is gone for good",
    )
    recover.add_argument(
        "--force",
        metavar="NODE:UUID:SEQNO",
        default="",
        help="bootstrap NODE if it is still at exactly this position (and none is higher)",
    )
    recover.add_argument("--json", action="store_true", help="one JSON document instead")
    recover.add_argument("--token-file", help="the agents' status token (status_token_file)")
    recover.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for each agent (3)"
    )

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
    demo_commands = demo.add_subparsers(
        dest="demo_command", metavar="fault", parser_class=DemoFaultParser
    )
    fault = demo_commands.add_parser(
        "fault",
        help="break or mend a node of the running demo by name: demo fault freeze n3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fault.add_argument("action", help="one of the faults listed below (they undo each other)")
    fault.add_argument("node", help="the node's name: n1, n2, ...")
    return parser


def flags_from(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, key, None) for key in KEYS if hasattr(args, key)}


def fail(message: str) -> int:
    print(f"galera-health: error: {message}", file=sys.stderr)
    return 2


def maintenance_command(args: argparse.Namespace) -> int:
    """Writes the maintenance file the agent watches: the local channel to a running agent.
    The state_dir and the node names are the agent's own, layered as the agent layers them
    (--state-dir, then the environment, then the --config file), so a node name the agent does
    not watch is refused instead of writing a file nobody reads."""
    from . import maintenance

    path = args.config or os.environ.get(ENV_PREFIX + "CONFIG")
    try:
        file_layer = raw_from_toml(path) if path else {}
        env_layer = raw_from_env(os.environ)
    except ConfigError as exc:
        return fail(str(exc))
    state_dir = args.state_dir or env_layer.get("state_dir") or file_layer.get("state_dir")
    nodes = env_layer.get("nodes") or file_layer.get("nodes")
    names = None if nodes is None else [node.name for node in nodes]
    if not state_dir:
        return fail("no state_dir; give --config FILE (the agent's config) or --state-dir DIR")
    if not os.path.isdir(state_dir):
        return fail(f"state_dir {state_dir!r} is not a directory; check the path")
    if args.node is not None:
        if not NODE_NAME_RE.match(args.node):
            return fail(f"node name {args.node!r} is not a valid node name")
        if names is None:
            return fail(
                f"cannot check node {args.node!r} against the agent's nodes; give --config FILE "
                "(the agent's config) or leave --node out (every node of the agent)"
            )
        if args.node not in names:
            source = "GALERA_HEALTH_NODES" if env_layer.get("nodes") else f"config file {path!r}"
            return fail(
                f"the agent has no node {args.node!r} (nodes in {source}: {', '.join(names)}); "
                "give one of them, or leave --node out for every node"
            )
    if args.action == "status":
        for name in sorted(os.listdir(state_dir)):
            if name == maintenance.ALL_NODES_FILE or name.startswith("maintenance."):
                record = maintenance.read_one(os.path.join(state_dir, name))
                if record is None:
                    continue
                node = name.partition(".")[2]
                stale = names is not None and node and node not in names
                note = " (no node of the agent has this name: no effect)" if stale else ""
                print(f"{name}: {record.description}{note}")
        return 0
    try:
        written = maintenance.switch(state_dir, args.node, args.action == "on", args.reason)
    except OSError as exc:
        return fail(f"cannot change {state_dir!r}: {exc.strerror}; run as a user who may write it")
    target = f"node {args.node}" if args.node else "every node"
    print(f"maintenance {args.action} for {target} ({written})")
    return 0


def recover_command(args: argparse.Namespace) -> int:
    """Asks, decides with the rule the agents and the start script use, prints; never acts."""
    from .recovery import decide, forced
    from .recovery_client import gather

    if not args.agent:
        return fail("name every node's agent: --agent n1=http://10.0.0.1:9200 --agent n2=...")
    try:
        agents = parse_agents(args.agent, "--agent")
    except ConfigError as exc:
        return fail(str(exc))
    unknown = [name for name in args.assume_lost if name not in agents]
    if unknown:
        return fail(f"--assume-lost {unknown[0]}: not a node given with --agent")
    if not 0 < args.timeout <= 60:
        return fail("--timeout must be between 0 and 60 seconds")
    try:
        token = read_token(args.token_file)
    except OSError as exc:
        return fail(f"cannot read --token-file {args.token_file!r}: {exc.strerror}")
    reports = gather(agents, token, args.timeout)
    decision = forced(decide(reports, args.assume_lost), args.force, reports)
    rows = [recovery_row(r) for r in reports]
    command = bootstrap_command(decision, reports)
    line = decision.line() + (f"; on {decision.node} run: {command}" if command else "")
    if args.json:
        print(
            json.dumps(
                {
                    "nodes": rows,
                    "decision": {
                        "action": decision.action,
                        "node": decision.node,
                        "reason": decision.reason,
                        "command": command,
                        "line": line,
                    },
                },
                indent=2,
            )
        )
    else:
        print_table(rows)
        print(line)
    return 1 if decision.action == "refuse" else 0


def recovery_row(report: NodeReport) -> dict[str, Any]:
    """node, uuid, seqno (or recovered position), safe_to_bootstrap, running, Primary."""
    facts = report.datadir
    grastate = facts.grastate if facts is not None else None
    position = facts.position if facts is not None else None
    recovered = facts is not None and facts.recovered is not None and position == facts.recovered
    if not report.answered:
        seqno = f"? ({report.detail})"
    elif facts is None or facts.error:
        seqno = f"? ({facts.error if facts else 'no datadir'})"
    elif facts.empty:
        seqno = "empty datadir"
    elif position is None:
        seqno = "unknown (-1, not recovered)"
    else:
        seqno = f"{position.seqno}{' (recovered)' if recovered else ''}"
    uuid = position.uuid if position else (facts.state_uuid if facts and not facts.error else None)
    return {
        "node": report.node,
        "answered": report.answered,
        "uuid": uuid,
        "seqno": position.seqno if position else None,
        "recovered": recovered,
        "position": seqno,
        "safe_to_bootstrap": grastate.safe_to_bootstrap if grastate else None,
        "running": report.running,
        "primary": report.primary,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    def word(value: Any) -> str:
        return (
            "-"
            if value is None
            else ("yes" if value is True else "no" if value is False else str(value))
        )

    header = ["node", "uuid", "seqno", "safe_to_bootstrap", "running", "Primary"]
    table = [header] + [
        [
            r["node"],
            word(r["uuid"]),
            r["position"],
            word(r["safe_to_bootstrap"]),
            word(r["running"]),
            word(r["primary"]),
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def bootstrap_command(decision: Decision, reports: Sequence[NodeReport]) -> str | None:
    """The exact command for a VM to bootstrap the chosen node (None unless bootstrap)."""
    if decision.action != "bootstrap":
        return None
    chosen = next(r for r in reports if r.node == decision.node)
    facts = chosen.datadir
    safe = facts is not None and facts.grastate is not None and facts.grastate.safe_to_bootstrap
    start = "galera_new_cluster (systemd; or: mariadbd --wsrep-new-cluster)"
    if safe or facts is None or facts.empty:
        return start
    return (
        "sed -i 's/^safe_to_bootstrap: *0/safe_to_bootstrap: 1/' /var/lib/mysql/grastate.dat "
        f"&& {start}"
    )


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
    """The agent (service.Agent) in this process: the signals are ours. SIGTERM drains (503
    for drain_seconds, then exit 0), a second SIGTERM or SIGINT exits 0 at once, SIGHUP
    reloads."""
    raise_open_files_limit()
    warn_if_readable_by_others(settings)
    try:
        agent = Agent(settings, reload_settings)
    except StartError as exc:
        return fail(str(exc))

    def stop(signum: int, _frame: FrameType | None) -> None:
        agent.stop()

    def drain(signum: int, _frame: FrameType | None) -> None:
        agent.drain()

    def reload(signum: int, _frame: FrameType | None) -> None:
        agent.poller.request_reload()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    # Held until the agent has started: start() takes the store's overlay lock in this thread
    # (the maintenance files), which a drain in a handler would wait for forever. The threads
    # it starts keep them blocked, so the kernel hands each signal to this thread.
    handled = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    try:
        agent.start()
    except StartError as exc:
        return fail(str(exc))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
    agent.run()
    return 0


def raise_open_files_limit() -> None:
    """waitress may hold up to connection_limit sockets: don't let a 1024 soft limit be what
    a connection storm runs into first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def warn_if_readable_by_others(settings: Settings, token: bool = True) -> None:
    """`token`: serve reads the status token file; check never does."""
    for key, path in (
        ("password_file", settings.credentials.password_file),
        ("option_file", settings.credentials.option_file),
        ("status_token_file", settings.status_token_file if token else None),
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


def check(settings: Settings) -> int:
    """One poll per node, like an exec probe: 0 all healthy, 1 a node unhealthy, 2 our error.
    One poll has no history: `rise` (from a config file shared with serve) does not apply."""
    warn_if_readable_by_others(settings, token=False)
    policy = replace(settings.policy, rise=1)
    worst = 0
    for address in settings.nodes:
        probe = probe_for(settings.node(address))
        started = time.monotonic()
        observation = probe.poll()
        probe.close()
        finished = time.monotonic()
        verdict = evaluate(
            observation,
            policy,
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
    if args.command == "recover":
        return recover_command(args)

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
