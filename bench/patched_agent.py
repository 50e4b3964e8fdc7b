"""The agent with one recommended hot-path change monkeypatched in, for an A/B bench run.

Why: galera_health/ is not edited from bench/; this measures a proposed change against the
unchanged agent in the same run (bench/profile_health.py --variant NAME). Variants:

  flask_only   without web.ProbeFastPath: every probe goes through Flask's routes (what the
               agent did before the fast path shipped).
  threads2     SERVER_SETTINGS threads=2 instead of 4 (less GIL hand-off on a 2-core machine).
  switch1ms    sys.setswitchinterval(0.001) instead of 5 ms: the asyncore thread waits less for
               the GIL while a worker runs Flask.

Join variants with "+" to apply several (flask_only+threads2).

Usage: python bench/patched_agent.py --patch flask_only serve --node ... (galera-health args)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from galera_health import cli, web


def flask_only(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_app(*a: Any, **k: Any) -> Any:
        return original(*a, **dict(k, fast_probes=False))

    return create_app


def main() -> int:
    argv = sys.argv[1:]
    if len(argv) < 2 or argv[0] != "--patch" or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    variant, rest = argv[1], argv[2:]
    for patch in variant.split("+"):  # e.g. flask_only+threads2
        if patch == "flask_only":
            web.create_app = flask_only(web.create_app)
        elif patch == "threads2":
            web.SERVER_SETTINGS["threads"] = 2
        elif patch == "switch1ms":
            sys.setswitchinterval(0.001)
        else:
            print(f"unknown variant {patch!r}; see --help", file=sys.stderr)
            return 2
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main())
