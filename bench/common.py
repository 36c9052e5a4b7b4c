"""What every scenario shares: a database, timing, percentiles, the results table."""

from __future__ import annotations

import asyncio
import math
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from app.db import asyncpg_dsn, migrate, start_embedded, with_database


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    ours: float
    floor: float | None
    unit: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    floor_p99_ms: float | None = None
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.floor is None or not self.floor or math.isnan(self.ours):
            return None
        return self.ours / self.floor


@dataclass
class Latencies:
    """Per-operation latencies (seconds), and the wall time of the whole run."""

    samples: list[float] = field(default_factory=list)
    wall: float = 0.0

    def percentile(self, q: float) -> float:
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def rate(self) -> float:
        return len(self.samples) / self.wall if self.wall else 0.0


def median_round(rounds: list[Latencies]) -> Latencies:
    """The round of median rate (alternating rounds: a noisy neighbour does not decide)."""
    return sorted(rounds, key=lambda r: r.rate)[len(rounds) // 2]


async def concurrently(
    workers: int, operations: int, operation: Callable[[int, int], Awaitable[None]]
) -> Latencies:
    """Run `operations` calls of operation(worker, i) spread over `workers` tasks; time each."""
    result = Latencies()
    per_worker = operations // workers

    async def worker(w: int) -> None:
        for i in range(per_worker):
            started = time.perf_counter()
            await operation(w, i)
            result.samples.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    result.wall = time.perf_counter() - started
    return result


def server_url() -> tuple[str, Path | None]:
    """A PostgreSQL server we may create databases on: DATABASE_URL's, or an embedded one
    started in a temporary directory (returned, to stop it afterwards)."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], None
    data_dir = Path(tempfile.mkdtemp(prefix="dealledger-bench-"))
    return start_embedded(data_dir, cleanup_mode="delete"), data_dir


async def fresh_database(server: str, name: str) -> str:
    """An empty, migrated database `name` on the server (dropped first if it exists)."""
    admin = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server, name)
    await asyncio.to_thread(migrate, url)
    return url


async def vacuum_analyze(url: str) -> None:
    """As after any bulk load: statistics and visibility maps before measuring, not
    autovacuum working through the fresh tables on the same cores while we do."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute("VACUUM (ANALYZE)")
    finally:
        await connection.close()


def machine() -> str:
    cpus = os.cpu_count()
    memory = ""
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
            memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip() + ", "
                    break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{model}{cpus} cores{memory}; {system}; Python {platform.python_version()}"
