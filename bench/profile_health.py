"""Where the time of GET /health goes: py-spy samples the real agent under a wrk probe storm.

Why: the hot path must stay cheap (it answers every LB/kubelet probe); this names the functions
that cost the most, by self time and inclusive time, over the agent's HTTP threads. With
--variant it also runs bench/patched_agent.py (the agent with a recommended change monkeypatched
in) beside the unchanged agent, interleaved, so the gain is a ratio from the same run.

Needs root (a test bed) and py-spy (pip install '.[bench]'), Debian wrk.
Usage: python bench/profile_health.py [--seconds 10] [--connections 16]
           [--variant flask_only,threads2]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

import _common

from galera_health.testbed import GaleraTestbed
from testkit.agent import ServerProcess


def profile(pid: int, url: str, seconds: float, connections: int) -> str:
    """Collapsed stacks of `pid` while wrk hammers `url`."""
    handle, out = tempfile.mkstemp(prefix="galera-health-pyspy-", suffix=".txt")
    os.close(handle)
    with _common.wrk_background(url, connections, seconds + 2):
        subprocess.run(
            [
                *_common.taskset(_common.LOAD_CPU),
                os.path.join(os.path.dirname(sys.executable), "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--gil",  # only samples holding the GIL: Python CPU time, no idle waits
                "--output",
                out,
            ],
            capture_output=True,
            timeout=seconds + 60,
            check=True,
        )
    with open(out) as f:
        text = f.read()
    os.unlink(out)
    return text


def summarize(collapsed: str, top: int) -> None:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        # "func (path/file.py:line)" -> "func (file.py)": one entry per function
        frames = [re.sub(r" \((?:.*/)?([^/:]+):\d+\)$", r" (\1)", f) for f in stack.split(";")]
        # only the waitress request path: worker threads and the asyncore loop
        if "waitress/" not in stack:
            continue
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"{total} samples on the waitress request path")
    print(f"\ntop {top} by self time:")
    for frame, count in self_time.most_common(top):
        print(f"  {100 * count / max(1, total):5.1f}%  {frame}")
    print(f"\ntop {top} by inclusive time:")
    for frame, count in inclusive.most_common(top):
        print(f"  {100 * count / max(1, total):5.1f}%  {frame}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="py-spy seconds (10)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--top", type=int, default=25, help="lines per list (25)")
    parser.add_argument(
        "--variant",
        help="also compare with bench/patched_agent.py --patch VARIANT (see its --help); "
        "several: comma-separated",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved wrk rounds (3)")
    args = parser.parse_args()
    _common.pin_self()
    print(_common.machine_line(), flush=True)
    bed = GaleraTestbed(3)
    started: list[ServerProcess] = []
    try:
        bed.start()
        n1 = bed.node("n1")
        agent = _common.start_agent([f"n1={n1.address()}"], bed.password_file)
        started.append(agent)
        summarize(profile(agent.pid, agent.url(), args.seconds, args.connections), args.top)
        if args.variant:
            servers: dict[str, ServerProcess] = {"agent": agent}
            for variant in args.variant.split(","):
                patched = _common.start_agent(
                    [f"n1={n1.address()}"],
                    bed.password_file,
                    name=variant,
                    module=(os.path.join(_common.BENCH, "patched_agent.py"), "--patch", variant),
                )
                started.append(patched)
                servers[variant] = patched
            bare = _common.start_bare()
            started.append(bare)
            compare({"bare": bare, **servers}, args.connections, args.rounds)
    finally:
        for server in reversed(started):
            server.stop()
        bed.stop()
    return 0


def compare(servers: dict[str, ServerProcess], connections: int, rounds: int) -> None:
    results: dict[str, list[_common.WrkResult]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, server in servers.items():
            results[name].append(_common.wrk(server.url(), connections, 5))
    rows = []
    for name, runs in results.items():
        rps = _common.median([r.rps for r in runs])
        p99 = _common.median([r.p99_ms for r in runs])
        rows.append([name, f"{rps:.0f}", _common.fmt(p99)])
    print(f"\nmedian of {rounds} interleaved 5 s wrk runs at c={connections}:")
    print(_common.table(["server", "req/s", "p99 ms"], rows))


if __name__ == "__main__":
    sys.exit(main())
