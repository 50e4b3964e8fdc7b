"""Facts both sides of the agent speak of: which status and variables a poll reads, and which
mode the MySQL driver runs in.

The poller side (probe.py) builds its query from these names; the HTTP side (metrics.py, web.py)
names metrics and /status fields after them. They live here, with no import of the driver, so
that loading the HTTP side never loads mysql.connector (docs/architecture.md, "Layers").
"""

from __future__ import annotations

# mysql-connector-python's pure-Python implementation, chosen explicitly: its C extension does
# not load on Debian 12 and the driver would silently fall back anyway; we test what we ship.
DRIVER_MODE = "pure"

# SHOW GLOBAL STATUS names a poll reads.
STATUS_NAMES = (
    "wsrep_cluster_status",
    "wsrep_local_state",
    "wsrep_local_state_comment",
    "wsrep_ready",
    "wsrep_connected",
    "wsrep_local_recv_queue",
    "wsrep_cluster_size",
    "wsrep_local_index",
    # identity, for dashboards (mysqld_exporter's mysql_galera_status_info)
    "wsrep_local_state_uuid",
    "wsrep_cluster_state_uuid",
    "wsrep_provider_version",
)
# Global variables a poll reads.
VARIABLE_NAMES = (
    "wsrep_on",
    "wsrep_desync",
    "wsrep_reject_queries",
    "wsrep_sst_donor_rejects_queries",
    "read_only",
)
