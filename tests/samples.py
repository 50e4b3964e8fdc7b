"""Facts shared by the unit and integration tests (test modules never import each other)."""

from __future__ import annotations

# What a healthy Synced node of a 3-node Primary component reports.
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
