"""How long does a node thawed after SIGSTOP still claim Primary/Synced?

Starts a 3-node test bed (evs.suspect_timeout=PT3S, evs.inactive_timeout=PT6S),
then ROUNDS times: freeze n3 for FREEZE seconds, thaw it, and from the SIGCONT
on poll n3 every 100 ms (a fresh ``mariadb`` CLI connection each time) for
wsrep_cluster_status / wsrep_local_state / wsrep_ready / wsrep_cluster_size.
Prints, per round, how long n3 still claimed Primary+Synced+ready after the
thaw, when it turned non-Primary, and when it was Synced/Primary again.

Needs root and the Debian packages mariadb-server, galera-4, rsync.
Usage: python bench/thaw_window.py [--rounds 5] [--freeze 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

try:
    from galera_health.testbed import GaleraTestbed, TestbedError, TestbedNode
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from galera_health.testbed import GaleraTestbed, TestbedError, TestbedNode

NAMES = ["wsrep_cluster_status", "wsrep_local_state", "wsrep_ready", "wsrep_cluster_size"]


@dataclass
class Sample:
    at: float  # seconds after SIGCONT, when the poll started
    took: float
    values: dict[str, str] | None
    error: str | None = None

    @property
    def good(self) -> bool:
        v = self.values
        return (
            v is not None
            and v.get("wsrep_cluster_status") == "Primary"
            and v.get("wsrep_local_state") == "4"
            and v.get("wsrep_ready") == "ON"
        )

    def label(self) -> str:
        if self.values is None:
            return f"error({(self.error or '')[:60]})"
        v = self.values
        return (
            f"{v.get('wsrep_cluster_status')}/state={v.get('wsrep_local_state')}"
            f"/ready={v.get('wsrep_ready')}/size={v.get('wsrep_cluster_size')}"
        )


@dataclass
class Round:
    first_answer: float | None
    last_good_before_split: float | None
    first_not_primary: float | None
    back_synced: float | None
    transitions: list[tuple[float, str]]


def poll(node: TestbedNode, t0: float) -> Sample:
    started = time.monotonic()
    try:
        values = node.statuses(NAMES, timeout=1.0)
        return Sample(started - t0, time.monotonic() - started, values)
    except TestbedError as exc:
        return Sample(started - t0, time.monotonic() - started, None, str(exc))


def one_round(bed: GaleraTestbed, freeze: float, limit: float) -> Round:
    n3 = bed.node("n3")
    for node in bed.nodes:
        node.wait_synced(timeout=120)
    n3.freeze()
    try:
        time.sleep(freeze)
    finally:
        t0 = time.monotonic()
        n3.thaw()
    samples: list[Sample] = []
    first_not_primary: float | None = None
    back_synced: float | None = None
    while time.monotonic() - t0 < limit:
        sample = poll(n3, t0)
        samples.append(sample)
        values = sample.values
        if first_not_primary is None and values is not None:
            if values.get("wsrep_cluster_status") != "Primary":
                first_not_primary = sample.at
        elif first_not_primary is not None and sample.good:
            back_synced = sample.at
            break
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t0 - sample.at)))
    answered = [s for s in samples if s.values is not None]
    good_before = [
        s.at for s in samples if s.good and (first_not_primary is None or s.at < first_not_primary)
    ]
    transitions: list[tuple[float, str]] = []
    for sample in samples:
        if not transitions or transitions[-1][1] != sample.label():
            transitions.append((sample.at, sample.label()))
    return Round(
        first_answer=answered[0].at if answered else None,
        last_good_before_split=max(good_before) if good_before else None,
        first_not_primary=first_not_primary,
        back_synced=back_synced,
        transitions=transitions,
    )


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:5.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--freeze", type=float, default=10.0, help="seconds n3 stays SIGSTOPped")
    parser.add_argument("--limit", type=float, default=90.0, help="max seconds to watch per round")
    parser.add_argument(
        "--provider-options",
        default="evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S",
        help="wsrep_provider_options for the test bed ('' for Galera's defaults)",
    )
    args = parser.parse_args()

    bed = GaleraTestbed(3, provider_options=args.provider_options)
    print(
        f"provider options: {args.provider_options or '(Galera defaults)'}; freeze {args.freeze} s"
    )
    try:
        started = time.monotonic()
        bed.start()
        print(
            f"3-node start (install-db, bootstrap, 2 joiners by SST, all Synced, monitor user): "
            f"{time.monotonic() - started:.1f} s"
        )
        rounds: list[Round] = []
        for index in range(args.rounds):
            result = one_round(bed, args.freeze, args.limit)
            rounds.append(result)
            print(
                f"round {index + 1}: first answer {fmt(result.first_answer)} s, "
                f"last Primary+Synced {fmt(result.last_good_before_split)} s, "
                f"first non-Primary {fmt(result.first_not_primary)} s, "
                f"Synced/Primary again {fmt(result.back_synced)} s (after SIGCONT)"
            )
            for at, label in result.transitions:
                print(f"    {at:6.2f}  {label}")
        print("summary (s after SIGCONT):")
        for name in ("last_good_before_split", "first_not_primary", "back_synced"):
            values = [getattr(r, name) for r in rounds]
            shown = ", ".join(fmt(v).strip() for v in values)
            print(f"  {name}: {shown}")
    finally:
        bed.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
