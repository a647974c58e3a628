"""``python -m drills [name ...]``: run the fault drills, print the table, write the JSON.

Exits 1 when a drill fails its checks, 2 when a drill could not be staged.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from drills import postgres_restart, receiver_timeout, redis_restart, worker_kill
from drills.harness import DrillError, Stack
from drills.report import DrillResult, table, write_json

DRILLS: dict[str, Callable[[Stack], Awaitable[DrillResult]]] = {
    "worker-kill": worker_kill.run,
    "redis-restart": redis_restart.run,
    "postgres-restart": postgres_restart.run,
    "receiver-timeout": receiver_timeout.run,
}
RESULTS = Path(__file__).resolve().parent / "results"


async def _main(names: list[str], keep: bool) -> int:
    started_at, started = dt.datetime.now(dt.UTC), time.monotonic()
    results: list[DrillResult] = []
    async with Stack.up(keep=keep) as stack:
        print(f"throwaway PostgreSQL on :{stack.postgres.port}, Redis on :{stack.redis.port}", file=sys.stderr)
        for name in names:
            print(f"drill {name} …", file=sys.stderr, flush=True)
            result = await DRILLS[name](stack)
            print(f"drill {name}: {result.verdict} in {result.seconds:.0f} s", file=sys.stderr, flush=True)
            results.append(result)
    print(table(results))
    path = write_json(results, started_at, time.monotonic() - started, RESULTS)
    print(f"\n{len(results)} drills in {time.monotonic() - started:.0f} s; JSON in {path}")
    return 0 if all(r.passed for r in results) else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m drills", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="name", help=f"drills to run (default: all): {', '.join(DRILLS)}")
    parser.add_argument("--keep", action="store_true", help="keep the servers' files and the processes' logs")
    args = parser.parse_args()
    if unknown := [n for n in args.names if n not in DRILLS]:
        parser.error(f"no drill named {', '.join(unknown)}; there are {', '.join(DRILLS)}")
    logging.basicConfig(level=logging.WARNING)
    try:
        sys.exit(asyncio.run(_main(args.names or list(DRILLS), args.keep)))
    except DrillError as exc:
        print(f"drill could not be staged: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: servers and processes stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
