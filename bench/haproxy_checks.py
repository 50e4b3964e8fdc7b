"""What HAProxy's check thresholds cost in detection, and what a 1 s network blip between HAProxy
and the agents does with each (docs/haproxy.md, "Check timing").

Why: `fall 1 rise 1` reacts at the first failed check, so one blip that fails the checks of every
server at once takes every server out at once; `fall 2` needs two in a row, which costs one more
check (`inter`, or `fastinter` once a server is in transition) on every real fault.

Set-up: a 3-node test bed, one agent per node at its defaults with a state_dir, and between
HAProxy and each agent's HTTP port a proxy (testkit.fault_servers.SwitchProxy) that can drop SYNs
("blackhole": a network blip) or accept and never answer ("silent": the agent's port frozen).
One real HAProxy (testkit.haproxy, `timeout check 1s`) with a listener per timing, all checking
`GET /health` through the same proxies, so every timing sees the same blips and the same faults.

Detection (--rounds, a node in turn): write the node's maintenance file (the agent is 503 within
0.25 s), time until each listener has the server out; remove it, time until it is back UP.
Blip (--blips): every proxy blackholed (or silent) for --blip s at once, at a random phase of the
checks; per listener, how many servers went out and for how long no server at all was UP.

Needs root (a 3-node test bed) and /usr/sbin/haproxy.
Usage: python bench/haproxy_checks.py [--rounds 6] [--blips 10] [--blip 1.0] [--mode blackhole]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import _common

from galera_health import maintenance
from galera_health.testbed import GaleraTestbed
from testkit.agent import AgentProcess
from testkit.fault_servers import SwitchProxy
from testkit.haproxy import Backend, HAProxy, Listener, ServerState, Transition, free_port

# listener -> its server options (they override the harness's `default-server` line)
TIMINGS = {
    "f1r1": "inter 1s fall 1 rise 1",
    "f2r2": "inter 1s fall 2 rise 2",
    "f2r2_fast": "inter 1s fastinter 250ms fall 2 rise 2",
    "f2r1_fast": "inter 1s fastinter 250ms fall 2 rise 1",
}


def routed(status: str) -> bool:
    """HAProxy still sends new sessions to "UP" and "UP 1/2" (going down), not to "DOWN 1/2"."""
    return status.startswith("UP")


def out_everywhere(server: str) -> Callable[[dict[tuple[str, str], ServerState]], bool]:
    def done(states: dict[tuple[str, str], ServerState]) -> bool:
        return all(not routed(states[(timing, server)].status) for timing in TIMINGS)

    return done


def first_after(
    transitions: list[Transition], since: float, listener: str, server: str, out: bool
) -> float:
    """Seconds from `since` to the first change of (listener, server) to out (or back UP)."""
    for change in transitions:
        if change.monotonic < since or (change.listener, change.server) != (listener, server):
            continue
        if (not routed(change.status)) if out else change.status == "UP":
            return change.monotonic - since
    return float("nan")


def outage(
    transitions: list[Transition], since: float, until: float, listener: str, servers: list[str]
) -> tuple[int, float, float]:
    """(servers that went out, seconds with none routed, seconds until all back UP)."""
    state = dict.fromkeys(servers, True)
    went_out: set[str] = set()
    none_since: float | None = None
    none_total = 0.0
    back = 0.0
    for change in transitions:
        if change.listener != listener or not since <= change.monotonic <= until:
            continue
        state[change.server] = routed(change.status)
        if not routed(change.status):
            went_out.add(change.server)
        if change.status == "UP" and change.server in went_out:
            back = max(back, change.monotonic - since)
        if not any(state.values()) and none_since is None:
            none_since = change.monotonic
        elif any(state.values()) and none_since is not None:
            none_total += change.monotonic - none_since
            none_since = None
    if none_since is not None:
        none_total += until - none_since
    return len(went_out), none_total, back


def fmt(values: list[float]) -> str:
    done = [v for v in values if v == v]
    if not done:
        return "never"
    return f"{statistics.median(done):.2f} ({min(done):.2f}-{max(done):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6, help="maintenance on/off rounds")
    parser.add_argument("--blips", type=int, default=10)
    parser.add_argument("--blip", type=float, default=1.0, help="seconds of each blip")
    parser.add_argument("--mode", choices=("blackhole", "silent"), default="blackhole")
    args = parser.parse_args()
    print(_common.machine_line())
    print(f"command: python bench/{' '.join(sys.argv)}".replace("bench/bench/", "bench/"))
    bed = GaleraTestbed(3)
    agents: list[AgentProcess] = []
    proxies: list[SwitchProxy] = []
    detection: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in TIMINGS}
    blips: dict[str, list[tuple[int, float, float]]] = {n: [] for n in TIMINGS}
    with tempfile.TemporaryDirectory(prefix="haproxy-checks-state-") as state_dir:
        try:
            bed.start()
            for node in bed.nodes:
                agents.append(
                    _common.start_agent(
                        [f"{node.name}={node.address()}"],
                        bed.password_file,
                        user=bed.monitor_user,
                        extra=["--state-dir", state_dir],
                        cpu=None,
                        name=f"agent-{node.name}",
                    )
                )
            proxies = [SwitchProxy(("127.0.0.1", agent.port)) for agent in agents]
            backends = [
                Backend(n.name, n.host, n.port, proxy.port)
                for n, proxy in zip(bed.nodes, proxies, strict=True)
            ]
            listeners = [
                Listener(name, "health", free_port(), backends, server_options=options)
                for name, options in TIMINGS.items()
            ]
            servers = [n.name for n in bed.nodes]
            with HAProxy(listeners, watch_every=0.02) as lb:
                print("haproxy sections:\n" + lb.sections)
                lb.wait_all_up(timeout=30)
                for turn in range(args.rounds):
                    server = servers[turn % len(servers)]
                    time.sleep(random.uniform(1.0, 2.0))  # a random phase of the checks
                    since = time.monotonic()
                    maintenance.switch(state_dir, server, True, "bench")
                    lb.wait(
                        out_everywhere(server),
                        timeout=20,
                        what=f"{server} out everywhere",
                    )
                    back_since = time.monotonic()
                    maintenance.switch(state_dir, server, False, "")
                    lb.wait_all_up(timeout=20)
                    time.sleep(0.2)  # the watcher has the last change
                    seen = lb.transitions()
                    for name in TIMINGS:
                        detection[name][0].append(first_after(seen, since, name, server, True))
                        detection[name][1].append(
                            first_after(seen, back_since, name, server, False)
                        )
                for _ in range(args.blips):
                    time.sleep(random.uniform(2.0, 3.0))
                    since = time.monotonic()
                    for proxy in proxies:
                        proxy.set_mode(args.mode)
                    time.sleep(args.blip)
                    for proxy in proxies:
                        proxy.set_mode("forward")
                    lb.wait_all_up(timeout=30)
                    time.sleep(0.3)
                    until = time.monotonic()
                    seen = lb.transitions()
                    for name in TIMINGS:
                        blips[name].append(outage(seen, since, until, name, servers))
        finally:
            for proxy in proxies:
                proxy.close()
            for agent in agents:
                agent.stop()
            bed.stop()
    print()
    print(
        f"Detection: maintenance file on one node ({args.rounds} rounds); blip: every agent's"
        f" HTTP port {args.mode} for {args.blip:g} s at once ({args.blips} blips);"
        " `timeout check 1s`; seconds as median (min-max)"
    )
    print()
    print(
        "| server options | out after maintenance on (s) | back after maintenance off (s)"
        " | blips that took a server out | blips that took every server out"
        " | no server UP (s, per such blip: median, max) |"
    )
    print("|---|---|---|---|---|---|")
    for name, options in TIMINGS.items():
        out, back = detection[name]
        results = blips[name]
        some = sum(1 for went, _, _ in results if went)
        every = [none for _, none, _ in results if none > 0]
        dark = f"{statistics.median(every):.2f}, {max(every):.2f}" if every else "-"
        print(
            f"| `{options}` | {fmt(out)} | {fmt(back)} | {some} of {len(results)}"
            f" | {len(every)} of {len(results)} | {dark} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
