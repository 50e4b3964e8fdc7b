"""Footprint of the agent: RSS and CPU idle (1 and 8 nodes) and under a probe storm, and a soak
with a fault cycle every 30 s in which RSS, threads and file descriptors must stay flat.

Why: a sidecar runs for months next to the database it watches; it must cost little at rest,
not grow with the probe rate, and not leak threads, sockets or memory while the node flaps
(freeze, split, desync, reject_queries, kill -9 + restart, in turn). The bare waitress app and the
naive per-request checker are measured beside it in the same run.

8 nodes = the 3 real nodes over TCP, the same 3 over their Unix sockets, and n1, n2 over TCP
again under other names. Figures come from /proc/<pid> (VmRSS, Threads, fd count, utime+stime).

Needs root (a 3-node test bed) and Debian wrk.
Usage: python bench/footprint.py [--idle 30] [--storm 20] [--soak 600]  (--soak 0 skips it)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import _common
from _common import ProcSample, cpu_percent, fmt, proc_sample

from galera_health.config import DEFAULT_INTERVAL
from galera_health.testbed import GaleraTestbed, TestbedNode
from testkit.agent import ServerProcess


def measure_idle(server: ServerProcess, seconds: float) -> tuple[ProcSample, float]:
    time.sleep(2)  # past the start-up
    before = proc_sample(server.pid)
    time.sleep(seconds)
    after = proc_sample(server.pid)
    return after, cpu_percent(before, after)


def measure_storm(
    server: ServerProcess, seconds: float, connections: int
) -> tuple[ProcSample, float, float]:
    before = proc_sample(server.pid)
    result = _common.wrk(server.url(), connections, seconds, timeout=1.0)
    after = proc_sample(server.pid)
    return after, cpu_percent(before, after), result.rps


def row(label: str, sample: ProcSample, cpu: float, rps: float | None = None) -> list[str]:
    return [
        label,
        "-" if rps is None else f"{rps:.0f}",
        f"{sample.rss_kib / 1024:.1f}",
        fmt(cpu, 1),
        str(sample.threads),
        str(sample.fds),
    ]


def soak_faults(n3: TestbedNode) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    def kill9() -> None:
        assert n3.pid is not None
        os.kill(n3.pid, signal.SIGKILL)

    def restart() -> None:
        n3.kill()
        n3.start()

    return [
        ("freeze", n3.freeze, n3.thaw),
        ("split", lambda: n3.isolate(True), lambda: n3.isolate(False)),
        ("desync", lambda: n3.sql("SET GLOBAL wsrep_desync=ON"),
         lambda: n3.sql("SET GLOBAL wsrep_desync=OFF")),
        ("reject_queries", lambda: n3.sql("SET GLOBAL wsrep_reject_queries=ALL"),
         lambda: n3.sql("SET GLOBAL wsrep_reject_queries=NONE")),
        ("kill -9", kill9, restart),
    ]  # fmt: skip


def soak(
    bed: GaleraTestbed, agent: ServerProcess, seconds: float, every: float
) -> tuple[list[ProcSample], list[ProcSample]]:
    """Samples every 5 s (they include the probe bursts' 64 client sockets), and one quiet
    sample at the end of each cycle, just before the next fault (the steady state)."""
    samples: list[ProcSample] = []
    quiet: list[ProcSample] = []
    stop = threading.Event()

    def sample_loop() -> None:
        while not stop.wait(5.0):
            with contextlib.suppress(OSError):
                samples.append(proc_sample(agent.pid))

    def lb_loop() -> None:  # a load balancer: /health every 100 ms on a fresh connection
        while not stop.wait(0.1):
            _common.get(agent.port, "/health", timeout=1.0)

    samples.append(proc_sample(agent.pid))
    threads = [threading.Thread(target=f, daemon=True) for f in (sample_loop, lb_loop)]
    for thread in threads:
        thread.start()
    n3 = bed.node("n3")
    faults = soak_faults(n3)
    started = time.monotonic()
    index = 0
    try:
        while time.monotonic() - started < seconds:
            cycle_start = time.monotonic()
            name, inject, recover = faults[index % len(faults)]
            index += 1
            try:
                inject()
                # a 3 s probe burst on the faulty node, then the fault holds a few s more
                _common.wrk(agent.url(), 64, 3, timeout=1.0)
                time.sleep(5)
            finally:
                if n3.frozen:
                    n3.thaw()
                recover()
            time.sleep(max(0.0, every - (time.monotonic() - cycle_start)))
            last = proc_sample(agent.pid)
            quiet.append(last)
            print(
                f"  {time.monotonic() - started:5.0f} s  after {name:14}"
                f" RSS {last.rss_kib / 1024:.1f} MiB  threads {last.threads}  fds {last.fds}",
                flush=True,
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        if n3.frozen:
            n3.thaw()
    samples.append(proc_sample(agent.pid))
    return samples, quiet


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--idle", type=float, default=30.0, help="seconds per idle window (30)")
    parser.add_argument("--storm", type=float, default=20.0, help="seconds of wrk storm (20)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--soak", type=float, default=600.0, help="soak seconds (600; 0 skips)")
    parser.add_argument("--every", type=float, default=30.0, help="a fault cycle every S (30)")
    args = parser.parse_args()
    _common.pin_self()
    print(_common.machine_line(), flush=True)
    bed = GaleraTestbed(3)
    started: list[ServerProcess] = []
    rows: list[list[str]] = []
    samples: list[ProcSample] = []
    quiet: list[ProcSample] = []
    try:
        bed.start()
        n1, n2, n3 = bed.nodes
        one = [f"n1={n1.address()}"]
        eight = [f"{n.name}={n.address()}" for n in bed.nodes]
        eight += [f"{n.name}s={n.socket}" for n in bed.nodes]
        eight += [f"n1b={n1.address()}", f"n2b={n2.address()}"]

        bare = _common.start_bare()
        started.append(bare)
        sample, cpu = measure_idle(bare, args.idle)
        rows.append(row("bare waitress app, idle", sample, cpu))
        sample, cpu, rps = measure_storm(bare, args.storm, args.connections)
        rows.append(row(f"bare waitress app, wrk c={args.connections}", sample, cpu, rps))
        bare.stop()
        started.remove(bare)

        naive = _common.start_naive(n1.host, n1.port, "health", bed.password_file)
        started.append(naive)
        sample, cpu = measure_idle(naive, args.idle)
        rows.append(row("naive checker, idle", sample, cpu))
        sample, cpu, rps = measure_storm(naive, args.storm, args.connections)
        rows.append(row(f"naive checker, wrk c={args.connections}", sample, cpu, rps))
        naive.kill()
        started.remove(naive)

        for label, nodes in (("1 node", one), ("8 nodes", eight)):
            agent = _common.start_agent(nodes, bed.password_file)
            started.append(agent)
            sample, cpu = measure_idle(agent, args.idle)
            rows.append(row(f"agent {label}, idle (interval {DEFAULT_INTERVAL:g} s)", sample, cpu))
            sample, cpu, rps = measure_storm(agent, args.storm, args.connections)
            rows.append(row(f"agent {label}, wrk c={args.connections}", sample, cpu, rps))
            sample, cpu = measure_idle(agent, min(args.idle, 10.0))
            rows.append(row(f"agent {label}, idle again after the storm", sample, cpu))
            agent.stop()
            started.remove(agent)

        print()
        header = ["process", "req/s", "RSS MiB", "CPU %", "threads", "fds"]
        print(_common.table(header, rows), flush=True)

        if args.soak > 0:
            print(f"\nsoak: {args.soak:g} s, a fault on n3 every {args.every:g} s", flush=True)
            agent = _common.start_agent(
                [f"{n.name}={n.address()}" for n in bed.nodes] + [f"n3s={n3.socket}"],
                bed.password_file,
            )
            started.append(agent)
            samples, quiet = soak(bed, agent, args.soak, args.every)
    finally:
        for server in reversed(started):
            if server.name == "naive":
                server.kill()
            else:
                server.stop()
        bed.stop()
    if samples:
        report_soak(samples, quiet)
    return 0


def report_soak(samples: list[ProcSample], quiet: list[ProcSample]) -> None:
    t0 = samples[0].at
    rows = []
    step = max(1, len(quiet) // 10)
    for sample in [samples[0], *quiet[step - 1 :: step]]:
        rows.append(
            [
                f"{sample.at - t0:.0f}",
                f"{sample.rss_kib / 1024:.1f}",
                str(sample.threads),
                str(sample.fds),
            ]
        )
    print("\nat the end of each fault cycle (quiet), every few cycles:")
    print(_common.table(["t s", "RSS MiB", "threads", "fds"], rows))
    for label, group in (("quiet end-of-cycle samples", quiet), ("every-5-s samples", samples)):
        if not group:
            continue
        print(
            f"{label} ({len(group)}): RSS {min(s.rss_kib for s in group) / 1024:.1f}-"
            f"{max(s.rss_kib for s in group) / 1024:.1f} MiB, threads "
            f"{min(s.threads for s in group)}-{max(s.threads for s in group)}, fds "
            f"{min(s.fds for s in group)}-{max(s.fds for s in group)}"
        )
    if quiet:
        print(
            f"RSS first cycle -> last cycle: {quiet[0].rss_kib / 1024:.1f} -> "
            f"{quiet[-1].rss_kib / 1024:.1f} MiB (the every-5-s maximum of fds includes the"
            " 64 sockets of a probe burst)"
        )


if __name__ == "__main__":
    sys.exit(main())
