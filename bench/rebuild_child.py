"""Rebuild every projection in a process of its own, so its peak memory is its own: prints
{"events": N, "seconds": S, "projections": [...], "max_rss_mib": M} as JSON."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time

from app.db import asyncpg_dsn
from app.projections.registry import build_projections
from app.projections.replay import rebuild_fast


async def main(url: str) -> None:
    started = time.perf_counter()
    projections = list(build_projections().values())
    workers = os.cpu_count() or 1
    events = await rebuild_fast(asyncpg_dsn(url), projections, workers=workers)
    if events is None:
        raise SystemExit("a projector follows these projections: stop it first")
    seconds = time.perf_counter() - started
    # The largest of this process and its workers (each folds its share of the deals).
    rss = (
        max(
            resource.getrusage(who).ru_maxrss
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        )
        / 1024
    )
    result = {
        "events": events,
        "seconds": seconds,
        "projections": [p.name for p in projections],
        "max_rss_mib": rss,
        "workers": workers,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
