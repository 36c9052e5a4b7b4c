"""Rebuild every projection in a process of its own, so its peak memory is its own:
prints {"events": N, "seconds": S, "per_projection": {...}, "max_rss_mib": M} as JSON."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

from app.db import asyncpg_dsn
from app.projections.registry import build_projections
from app.projections.runner import rebuild


async def main(url: str) -> None:
    per: dict[str, float] = {}
    events = 0
    started = time.perf_counter()
    for name, projection in build_projections().items():
        began = time.perf_counter()
        events = await rebuild(asyncpg_dsn(url), projection, batch_size=5000)
        per[name] = round(time.perf_counter() - began, 2)
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"events": events, "seconds": seconds, "per_projection": per, "max_rss_mib": rss}
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
