"""Rebuild every projection in a process of its own, so its peak memory is its own: prints
{"events": N, "seconds": S, "projections": [...], "max_rss_mib": M} as JSON.

Peak memory is each process's VmHWM (the high-water mark of its own address space), watched
while the workers run: getrusage's ru_maxrss would not do, as Linux carries the spawning
process's peak across exec into the child's (the bench process grows as it loads logs, and
its size showed up as the rebuild's: 178, 276, 758 MiB at 0.3, 1.1, 3.6M events)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

from app.db import asyncpg_dsn
from app.projections.registry import build_projections
from app.projections.replay import rebuild_fast


def _hwm_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class PeakWatch:
    """The largest VmHWM of this process and of its children, sampled every 50 ms."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = os.getpid()
        for pid in (me, *_children(me)):
            self.peak_kib = max(self.peak_kib, _hwm_kib(pid))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def __enter__(self) -> PeakWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


async def main(url: str) -> None:
    started = time.perf_counter()
    projections = list(build_projections().values())
    workers = os.cpu_count() or 1
    with PeakWatch() as watch:
        events = await rebuild_fast(asyncpg_dsn(url), projections, workers=workers)
    if events is None:
        raise SystemExit("a projector follows these projections: stop it first")
    seconds = time.perf_counter() - started
    result = {
        "events": events,
        "seconds": seconds,
        "projections": [p.name for p in projections],
        "max_rss_mib": watch.peak_kib / 1024,
        "workers": workers,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
