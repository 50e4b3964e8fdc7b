"""Maintenance as files in a state directory: MariaDB has no pxc_maint_mode, so this is ours.

`<state_dir>/maintenance` puts every node of the agent into maintenance, `maintenance.<node>`
one node. A file is the local channel on purpose: only who may write the directory can use it,
it survives an agent restart, and on Kubernetes the database container can `touch` it on a
volume it shares with the agent (its preStop hook). The file's text is the reason, its mtime the
start, its owner who.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import time
from dataclasses import dataclass

ALL_NODES_FILE = "maintenance"


@dataclass(frozen=True)
class Maintenance:
    reason: str
    since: float  # wall clock
    by: str
    path: str

    @property
    def description(self) -> str:
        return f"maintenance ({self.reason}; by {self.by})" if self.reason else "maintenance"


def file_for(state_dir: str, node: str | None) -> str:
    return os.path.join(state_dir, ALL_NODES_FILE if node is None else f"{ALL_NODES_FILE}.{node}")


def owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def read_one(path: str) -> Maintenance | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            stat = os.fstat(handle.fileno())
            text = handle.read(1024)
    except FileNotFoundError:
        return None
    except OSError:
        # present but unreadable: still maintenance (fail closed), reason unknown
        return Maintenance("maintenance file present but unreadable", time.time(), "?", path)
    reason = " ".join(text.split())[:200]
    return Maintenance(reason, stat.st_mtime, owner_name(stat.st_uid), path)


def scan(state_dir: str, nodes: tuple[str, ...]) -> dict[str, Maintenance]:
    """Which nodes are in maintenance now; a node's own file wins over the all-nodes file."""
    everyone = read_one(file_for(state_dir, None))
    result: dict[str, Maintenance] = {}
    for node in nodes:
        own = read_one(file_for(state_dir, node))
        if own is not None:
            result[node] = own
        elif everyone is not None:
            result[node] = everyone
    return result


def switch(state_dir: str, node: str | None, on: bool, reason: str) -> str:
    """What `galera-health maintenance on|off` does: write or remove one file atomically."""
    path = file_for(state_dir, node)
    if not on:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return path
    who = f"{owner_name(os.geteuid())}@{socket.gethostname()}"
    text = f"{reason} (set by {who} with galera-health maintenance)" if reason else f"set by {who}"
    temporary = f"{path}.tmp.{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    os.replace(temporary, path)
    return path
