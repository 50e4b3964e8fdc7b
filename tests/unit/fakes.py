"""Fakes the unit tests share: a synced node's facts and a probe that answers from a script.

A module of its own, so that test modules import from it rather than from each other.
"""

from __future__ import annotations

from galera_health.verdict import Observation, ProbeError

# What a healthy, Synced, Primary node of a 3-node cluster reports.
SYNCED = {
    "wsrep_on": "ON",
    "wsrep_connected": "ON",
    "wsrep_cluster_status": "Primary",
    "wsrep_local_state": "4",
    "wsrep_local_state_comment": "Synced",
    "wsrep_ready": "ON",
    "wsrep_desync": "OFF",
    "wsrep_reject_queries": "NONE",
    "wsrep_sst_donor_rejects_queries": "OFF",
    "read_only": "OFF",
    "wsrep_cluster_size": "3",
    "wsrep_local_recv_queue": "0",
    "wsrep_local_index": "0",
}


class FakeProbe:
    """Stands in for NodeProbe in the poller: answers each poll with the next scripted
    observation (the last one repeats), and records closes and kills."""

    def __init__(self, *observations: Observation) -> None:
        self.observations = list(observations)
        self.polls = 0
        self.closed = False
        self.killed: list[int] = []
        self.kill_error: ProbeError | None = None

    def poll(self) -> Observation:
        self.polls += 1
        if len(self.observations) > 1:
            return self.observations.pop(0)
        return self.observations[0]

    def close(self) -> None:
        self.closed = True

    def kill_client_sessions(self) -> tuple[int, ProbeError | None]:
        self.killed.append(self.polls)
        return (0 if self.kill_error else 2), self.kill_error
