"""Probe latency and throughput of GET /health: agent vs the bare waitress floor vs a naive checker.

Why: the agent's promise is that an HTTP answer never waits on MySQL, so /health must be as fast
with the node frozen (SIGSTOP) or blackholed as with the node healthy, and close to what waitress
itself costs. Each figure is measured beside a bare WSGI hello-world (bench/bare_app.py, same
SERVER_SETTINGS) and the naive per-request checker (bench/naive_checker.py) in the same run, so
the ratios hold on a noisy shared machine. Healthy also runs the same bytes from a plain Flask
route (bare_app.py --flask) and the agent without its fast path (patched_agent.py --patch
flask_only): what the fast path buys, in the same run. While n1 is frozen, agents watching a
healthy node, the frozen node and a blackhole are also measured interleaved over --rounds short
runs: the sequential cells cannot resolve the 10 % goal on a shared machine. Likewise bare,
plain Flask and agent are interleaved over --floor-rounds per concurrency for the p99 goal.
Servers are pinned to CPU 0, wrk to CPU 1.

Needs root (a 3-node test bed) and Debian wrk (apt-get install -y wrk).
Usage: python bench/probe_latency.py [--seconds 5] [--concurrency 1,16,64] [--no-naive]
           [--no-flask] [--rounds 8] [--floor-rounds 5] [--round-seconds 3]
           [--round-concurrency 16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from collections.abc import Iterator, Mapping

import _common
from _common import WrkResult, fmt

from galera_health.testbed import GaleraTestbed, TestbedNode
from testkit.agent import ServerProcess
from testkit.fault_servers import Blackhole

NAIVE_TIMEOUT = 1.0  # client timeout for the naive checker, which hangs by design


@contextlib.contextmanager
def frozen(node: TestbedNode) -> Iterator[None]:
    node.freeze()
    try:
        yield
    finally:
        node.thaw()  # SIGCONT, always


def run_state(
    state: str,
    servers: dict[str, ServerProcess],
    naive_target: tuple[str, int] | None,
    password_file: str,
    levels: list[int],
    seconds: float,
) -> dict[tuple[str, int], WrkResult]:
    results: dict[tuple[str, int], WrkResult] = {}
    for connections in levels:
        for name, server in servers.items():
            results[(name, connections)] = _common.wrk(server.url(), connections, seconds)
            show(state, name, results[(name, connections)])
        if naive_target is not None:
            # a fresh naive checker per run: on a frozen/blackholed node it hangs for good
            naive = _common.start_naive(*naive_target, "health", password_file)
            try:
                result = _common.wrk(naive.url(), connections, seconds, timeout=NAIVE_TIMEOUT)
            finally:
                naive.kill()  # by PID
            results[("naive", connections)] = result
            show(state, "naive", result)
    return results


def interleaved(
    servers: Mapping[str, ServerProcess], connections: int, seconds: float, count: int
) -> dict[str, list[WrkResult]]:
    """Short wrk runs against agents that differ only in the state of the node they watch,
    alternated (A B C, C B A, ...) so that the machine's drift hits every state alike: the
    sequential 5 s cells of one state after another cannot resolve 10 % on a shared machine."""
    results: dict[str, list[WrkResult]] = {name: [] for name in servers}
    order = list(servers)
    for number in range(count):
        for name in order if number % 2 == 0 else reversed(order):
            result = _common.wrk(servers[name].url(), connections, seconds)
            results[name].append(result)
            show(f"round {number + 1}", name, result)
    return results


def report_interleaved(
    rounds: dict[str, list[WrkResult]], reference: str, title: str, goals: tuple[str, str]
) -> None:
    """Per server: medians over the rounds, and the median of the per-round ratios to
    `reference` (each ratio from two runs a few seconds apart)."""
    base = rounds[reference]
    rows = []
    for name, results in rounds.items():
        rps_ratios = [r.rps / b.rps for r, b in zip(results, base, strict=True)]
        p99_ratios = [r.p99_ms / b.p99_ms for r, b in zip(results, base, strict=True)]
        rows.append(
            [
                name,
                str(len(results)),
                f"{statistics.median(r.rps for r in results):.0f}",
                fmt(statistics.median(r.p99_ms for r in results)),
                fmt(statistics.median(rps_ratios)),
                fmt(statistics.median(p99_ratios)),
                str(sum(r.timeouts + r.errors for r in results)),
            ]
        )
    print()
    print(
        _common.table(
            [
                title,
                "rounds",
                "median req/s",
                "median p99 ms",
                f"req/s vs {reference}, median of rounds{goals[0]}",
                f"p99 vs {reference}, median of rounds{goals[1]}",
                "t/o+err",
            ],
            rows,
        )
    )


def show(state: str, name: str, r: WrkResult) -> None:
    print(
        f"  {state:10} {name:11} c={r.connections:<3} {r.rps:8.0f} req/s  p50 {fmt(r.p50_ms)} ms"
        f"  p99 {fmt(r.p99_ms)} ms  max {fmt(r.max_ms)} ms  non-2xx {r.non_2xx}"
        f"  timeouts {r.timeouts}  errors {r.errors}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per run (5)")
    parser.add_argument("--concurrency", default="1,16,64", help="wrk connections (1,16,64)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive checker")
    parser.add_argument(
        "--no-flask",
        action="store_true",
        help="skip the plain Flask route and the agent without its fast path (healthy only)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=8,
        help="interleaved healthy/frozen/blackholed rounds for the 10%% goal (8; 0 skips)",
    )
    parser.add_argument(
        "--floor-rounds",
        type=int,
        default=5,
        help="interleaved bare/flask/agent rounds per concurrency, healthy (5; 0 skips)",
    )
    parser.add_argument("--round-seconds", type=float, default=3.0, help="wrk per round (3)")
    parser.add_argument("--round-concurrency", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    _common.pin_self()
    print(_common.machine_line(), flush=True)

    bed = GaleraTestbed(3)
    started: list[ServerProcess] = []
    blackhole: Blackhole | None = None
    all_results: dict[str, dict[tuple[str, int], WrkResult]] = {}
    rounds: dict[str, list[WrkResult]] = {}
    floor: dict[int, dict[str, list[WrkResult]]] = {}
    try:
        bed.start()
        n1 = bed.node("n1")
        bare = _common.start_bare()
        started.append(bare)
        agent = _common.start_agent([f"n1={n1.address()}"], bed.password_file)
        started.append(agent)
        naive_target = None if args.no_naive else (n1.host, n1.port)
        references: dict[str, ServerProcess] = {}
        if not args.no_flask:
            references["flask"] = _common.start_bare(flask=True)
            started.append(references["flask"])
            references["agent_flask"] = _common.start_agent(
                [f"n1={n1.address()}"],
                bed.password_file,
                name="agent_flask",
                module=(os.path.join(_common.BENCH, "patched_agent.py"), "--patch", "flask_only"),
            )
            started.append(references["agent_flask"])

        print("healthy:", flush=True)
        all_results["healthy"] = run_state(
            "healthy",
            {"bare": bare, **references, "agent": agent},
            naive_target,
            bed.password_file,
            levels,
            args.seconds,
        )

        blackhole = Blackhole()
        agent_bh = _common.start_agent(
            [f"n1=127.0.0.1:{blackhole.port}"],
            bed.password_file,
            name="agent-bh",
            wait_healthy=False,
        )
        started.append(agent_bh)
        agent_n2 = _common.start_agent(
            [f"n2={bed.node('n2').address()}"], bed.password_file, name="agent_n2"
        )
        started.append(agent_n2)

        if args.floor_rounds:
            versus = {"bare": bare, **references, "agent": agent}
            for connections in levels:
                print(
                    f"interleaved: {args.floor_rounds} rounds of {args.round_seconds:g} s at "
                    f"c={connections}, {' / '.join(versus)} (healthy):",
                    flush=True,
                )
                floor[connections] = interleaved(
                    versus, connections, args.round_seconds, args.floor_rounds
                )

        print("frozen (n1 SIGSTOPped):", flush=True)
        with frozen(n1):
            waited, _ = agent.wait_for(lambda a: a.status == 503, "/health", timeout=30)
            print(f"  agent said 503 {waited:.1f} s after SIGSTOP", flush=True)
            all_results["frozen"] = run_state(
                "frozen",
                {"bare": bare, "agent": agent},
                naive_target,
                bed.password_file,
                levels,
                args.seconds,
            )
            agent_bh.wait_for(lambda a: a.status == 503, "/health", timeout=30)
            if args.rounds:
                print(
                    f"interleaved: {args.rounds} rounds of {args.round_seconds:g} s at "
                    f"c={args.round_concurrency}, agent on healthy n2 / frozen n1 / blackhole:",
                    flush=True,
                )
                same_time = {"healthy": agent_n2, "frozen": agent, "blackholed": agent_bh}
                rounds = interleaved(
                    same_time, args.round_concurrency, args.round_seconds, args.rounds
                )

        print("blackholed (agent pointed at a Blackhole):", flush=True)
        all_results["blackholed"] = run_state(
            "blackholed",
            {"bare": bare, "agent": agent_bh},
            None if args.no_naive else ("127.0.0.1", blackhole.port),
            bed.password_file,
            levels,
            args.seconds,
        )
    finally:
        for server in reversed(started):
            server.stop()
        if blackhole is not None:
            blackhole.close()
        bed.stop()

    report(all_results, levels)
    for connections, floor_rounds in floor.items():
        report_interleaved(
            floor_rounds,
            "bare",
            f"healthy c={connections} (interleaved)",
            ("", " (goal <=2 for agent)"),
        )
    if rounds:
        report_interleaved(
            rounds, "healthy", "node (interleaved)", (" (goal >=0.9)", " (goal <=1.1)")
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    state: {f"{n}@{c}": vars(r) | {"raw": ""} for (n, c), r in res.items()}
                    for state, res in all_results.items()
                },
                handle,
                indent=1,
            )
    return 0


def report(results: dict[str, dict[tuple[str, int], WrkResult]], levels: list[int]) -> None:
    rows = []
    for state, res in results.items():
        for c in levels:
            for name in ("bare", "flask", "agent_flask", "agent", "naive"):
                r = res.get((name, c))
                if r is None:
                    continue
                rows.append(
                    [
                        state,
                        name,
                        str(c),
                        f"{r.rps:.0f}",
                        fmt(r.p50_ms),
                        fmt(r.p99_ms),
                        fmt(r.max_ms),
                        str(r.non_2xx),
                        str(r.timeouts + r.errors),
                    ]
                )
    print()
    header = ["node", "server", "conc", "req/s", "p50 ms", "p99 ms", "max ms", "non-2xx", "t/o+err"]
    print(_common.table(header, rows))

    ratio_rows = []
    healthy = results["healthy"]
    for state, res in results.items():
        for c in levels:
            agent, bare = res[("agent", c)], res[("bare", c)]
            base = healthy[("agent", c)]
            ratio_rows.append(
                [
                    state,
                    str(c),
                    f"{agent.rps:.0f}",
                    fmt(agent.p99_ms / bare.p99_ms),
                    fmt(agent.rps / bare.rps),
                    fmt(agent.rps / base.rps),
                    fmt(agent.p99_ms / base.p99_ms),
                ]
            )
    if ("flask", levels[0]) in healthy:
        reference_rows = [
            [name, str(c), fmt(healthy[(name, c)].p99_ms / healthy[("bare", c)].p99_ms),
             fmt(healthy[(name, c)].rps / healthy[("bare", c)].rps)]
            for name in ("flask", "agent_flask", "agent")
            for c in levels
        ]  # fmt: skip
        print()
        print(
            _common.table(
                ["healthy, same run", "conc", "p99 / bare p99", "req/s / bare req/s"],
                reference_rows,
            )
        )
    print()
    print(
        _common.table(
            [
                "node",
                "conc",
                "agent req/s (goal >2000)",
                "agent/bare p99 (goal <=2)",
                "agent/bare req/s",
                "req/s vs healthy (goal >=0.9)",
                "p99 vs healthy (goal <=1.1)",
            ],
            ratio_rows,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
