"""Asking agents for their node's /recovery document (the I/O edge of whole-cluster recovery).

Used by `galera-health recover` and by the agent's recovery job (recovery_peers), so both build
the same reports for recovery.decide. Every agent is asked at once, each with one deadline.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .recovery import NodeReport, report_from_document

TIMEOUT = 3.0


def fetch(name: str, url: str, token: str | None, timeout: float = TIMEOUT) -> NodeReport:
    """The node's report from its agent at `url` (base URL); not answered: why, in one line."""
    request = urllib.request.Request(url + "/recovery", headers={"Accept": "application/json"})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            document: Any = json.loads(answer.read(1 << 20))
    except urllib.error.HTTPError as exc:
        hint = {401: "; give the status token with --token-file", 404: "; upgrade that agent"}
        return NodeReport(name, False, detail=f"HTTP {exc.code}{hint.get(exc.code, '')}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return NodeReport(name, False, detail=str(reason) or type(reason).__name__)
    except ValueError:
        return NodeReport(name, False, detail="the answer is not JSON")
    nodes = document.get("nodes") if isinstance(document, dict) else None
    if not isinstance(nodes, dict) or not nodes:
        return NodeReport(name, False, detail="the answer has no node")
    entry = nodes.get(name) if name in nodes else next(iter(nodes.values()))
    if len(nodes) > 1 and name not in nodes:
        return NodeReport(name, False, detail=f"that agent watches {', '.join(nodes)}, not {name}")
    if not isinstance(entry, dict):
        return NodeReport(name, False, detail="the answer is not a /recovery document")
    return report_from_document(name, entry)


def gather(
    agents: Mapping[str, str], token: str | None, timeout: float = TIMEOUT
) -> list[NodeReport]:
    """Every agent's report, asked in parallel: the whole takes at most about one `timeout`."""
    with ThreadPoolExecutor(max_workers=max(1, len(agents))) as pool:
        futures = [pool.submit(fetch, n, u, token, timeout) for n, u in agents.items()]
        return [future.result() for future in futures]
