"""Reading a node's Galera state files (the I/O edge of galera_health/recovery.py).

Run by a background job of the agent (never by an HTTP handler) and only on the files named
here, read-only: grastate.dat, gvwstate.dat and the --wsrep-recover log.
"""

from __future__ import annotations

import os

from .recovery import RECOVERED_LOG, Datadir, datadir_facts

GRASTATE = "grastate.dat"
GVWSTATE = "gvwstate.dat"
# A --wsrep-recover log is a few KB; only its last position line matters.
MAX_READ = 65536


def _read(path: str) -> tuple[str | None, float | None]:
    """(text, mtime), or (None, None) when the file does not exist."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            mtime = os.fstat(handle.fileno()).st_mtime
            handle.seek(max(0, size - MAX_READ))
            return handle.read(MAX_READ).decode("utf-8", errors="replace"), mtime
    except FileNotFoundError:
        return None, None


def read_datadir(datadir: str) -> Datadir:
    """What the datadir says now. Empty: no grastate.dat and no `mysql` system schema (a new
    or wiped volume). An unreadable file is an error naming the fix, never a guess."""
    try:
        if not os.path.isdir(datadir):
            return Datadir(False, error=f"datadir {datadir} is not a directory; check the path")
        has_data = os.path.isdir(os.path.join(datadir, "mysql"))
        grastate, grastate_mtime = _read(os.path.join(datadir, GRASTATE))
        gvwstate, _ = _read(os.path.join(datadir, GVWSTATE))
        log, log_mtime = _read(os.path.join(datadir, RECOVERED_LOG))
    except OSError as exc:
        return Datadir(
            False,
            error=f"cannot read {exc.filename or datadir}: {exc.strerror}; give the agent's "
            "user read access (docs/architecture.md, Whole-cluster recovery)",
        )
    newer = log_mtime is not None and (grastate_mtime is None or log_mtime >= grastate_mtime)
    return datadir_facts(has_data, grastate, gvwstate, log, newer)
