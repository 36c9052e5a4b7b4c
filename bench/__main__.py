"""python -m bench [--quick] [--events N] [--write PATH]

Starts an embedded PostgreSQL in a temporary directory (or uses DATABASE_URL's server: it
creates databases there), measures each scenario and its floor in this run, prints one table,
and with --write records it as markdown. Ratios are ours / floor: they travel between
machines; absolute figures do not.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import uvloop
from rich.console import Console
from rich.table import Table

from app.db import stop_embedded
from bench import analytics, http_wrk, log_tree, scale, scenarios, webhooks
from bench.common import Row, fresh_database, machine, server_url, vacuum_analyze
from bench.load import bulk_load

console = Console(stderr=True, width=200)


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def table(rows: list[Row]) -> Table:
    out = Table(title="dealledger vs. the floor, same machine, same run")
    for column in (
        "scenario",
        "ours",
        "floor",
        "ratio",
        "unit",
        "p50 ms",
        "p99 ms",
        "floor p99 ms",
        "target",
        "note",
    ):
        out.add_column(
            column, justify="left" if column in ("scenario", "unit", "target", "note") else "right"
        )
    for r in rows:
        out.add_row(
            r.scenario,
            _fmt(r.ours),
            _fmt(r.floor),
            f"{r.ratio:.0%}" if r.ratio is not None else "-",
            r.unit,
            _fmt(r.p50_ms, 1),
            _fmt(r.p99_ms, 1),
            _fmt(r.floor_p99_ms, 1),
            r.target,
            r.note,
        )
    return out


def markdown(rows: list[Row], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "| scenario | ours | floor | ratio | unit | p50 ms | p99 ms | floor p99 ms | target"
        " | note |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        ratio = f"{r.ratio:.0%}" if r.ratio is not None else "-"
        lines.append(
            f"| {r.scenario} | {_fmt(r.ours)} | {_fmt(r.floor)} | {ratio} | {r.unit} |"
            f" {_fmt(r.p50_ms, 1)} | {_fmt(r.p99_ms, 1)} | {_fmt(r.floor_p99_ms, 1)} |"
            f" {r.target} | {r.note} |"
        )
    header = (
        f"Measured {date.today().isoformat()} with `python -m bench"
        f"{' --quick' if args.quick else ''} --events {args.events}` in {seconds / 60:.0f} min"
        f" on: {machine()}; PostgreSQL embedded (pgserver), default settings.\n"
    )
    return header + "\n" + "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> list[Row]:
    quick = args.quick
    server, data_dir = server_url()
    rows: list[Row] = []
    try:
        writes = await fresh_database(server, "dealledger_bench_writes")
        for writers, commands in ((1, 300 if quick else 3000), (16, 800 if quick else 12000)):
            console.print(f"append: {writers} writer(s), {commands} commands")
            rows.append(await scenarios.append(writes, writers, commands, 1 if quick else 3))
        async with scenarios.servers(writes) as (ours, floor):
            console.print("batch ingest")
            rows.append(await scenarios.batch_ingest(writes, ours, 8 if quick else 80))
            console.print("HTTP command under wrk")
            if http_wrk.wrk_available():
                deals = await http_wrk.deals_for_load(writes, 200)
                run_for, rounds = (2, 1) if quick else (10, 3)
                rows.append(
                    await asyncio.to_thread(
                        http_wrk.http_command, ours, floor, deals, run_for, rounds
                    )
                )
            else:
                rows.append(http_wrk.unavailable("HTTP command under wrk"))
        if http_wrk.wrk_available():
            console.print("HTTP command, serve --workers 2 against --workers 1")
            async with http_wrk.serving_workers(writes, ours.token) as (one, two):
                deals = await http_wrk.deals_for_load(writes, 200)
                run_for, rounds = (2, 1) if quick else (10, 3)
                rows.append(
                    await asyncio.to_thread(http_wrk.workers_row, one, two, deals, run_for, rounds)
                )
        console.print("projection lag")
        rows.append(await scenarios.projection_lag(writes, 3 if quick else 20))
        console.print("webhook lag under the 16-writer append load")
        rows.append(await webhooks.webhook_lag(writes, 3 if quick else 20))
        console.print("append with the log sequencer following")
        rows.append(await log_tree.append_with_sequencer(writes, 300 if quick else 3000))

        log = await fresh_database(server, "dealledger_bench_log")
        sizes = (args.events // 4, args.events)
        loaded = 0
        deals = []
        rebuilds = []
        proofs: list[Row] = []
        for n, size in enumerate(sizes):
            console.print(f"bulk-loading the log to {size:,} events")
            added, ids, seconds = await bulk_load(log, size - loaded, seed=n + 1)
            loaded += added
            deals += ids
            console.print(f"  {added:,} events in {seconds:.0f}s; rebuilding every projection")
            result = scenarios.rebuild_all(log)
            copied, copy_seconds = await scenarios.copy_floor(log)
            rebuilds.append((loaded, result, copied / copy_seconds))
            proofs.append(await log_tree.inclusion_proofs(log, 200 if quick else 2000))
        for events, result, floor_rate in rebuilds:
            per = ", ".join(result["projections"])
            rows.append(
                Row(
                    f"rebuild all projections, {events:,} events",
                    events / result["seconds"],
                    floor_rate,
                    "events/s",
                    target="≥ 100,000/s and ≥ 50% of COPY; memory flat",
                    note=f"peak RSS {result['max_rss_mib']:.0f} MiB (largest process);"
                    f" per deal over {result['workers']} workers + the tree: {per}",
                )
            )
        rows.extend(proofs)
        await vacuum_analyze(log)
        async with scenarios.servers(log) as (ours, floor):
            console.print(f"read one deal at {loaded:,} events")
            rows.append(await scenarios.read_one_deal(deals, ours, floor, 300 if quick else 3000))
            console.print(f"pipeline health and weekly inspection at {loaded:,} events")
            rows.extend(await scenarios.manager_reports(ours, 5 if quick else 30))
            console.print(f"pages at {len(deals):,} deals")
            rows.extend(await scenarios.ui_pages(ours, deals, 5 if quick else 50))
        console.print(f"analytics over {args.deals:,} deals (bulk-loaded, short histories)")
        rows.extend(await analytics.analytics_rows(server, args.deals, 5 if quick else 30))
        if args.scale:
            console.print(f"costs as the log grows to {args.scale:,} events")
            rows.extend(await _scale(server, args.scale, quick))
        if not args.no_peer:
            from bench import peer

            console.print("peer: eventsourcing")
            peer_url = await fresh_database(server, "dealledger_bench_peer")
            rows.extend(await peer.run(peer_url, 300 if quick else 3000, rows))
    finally:
        if data_dir is not None:
            stop_embedded(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)
    return rows


async def _scale(server: str, events: int, quick: bool) -> list[Row]:
    """A small log's costs, then bulk-load on to `events`, rebuild, and the costs again."""
    url = await fresh_database(server, "dealledger_bench_scale")
    small_size = min(events // 10, 5_000 if quick else 100_000)
    added, deals, _ = await bulk_load(url, small_size, seed=11)
    scenarios.rebuild_all(url)
    await vacuum_analyze(url)
    small = await scale.costs(url, deals, quick)
    console.print(f"  bulk-loading on to {events:,} events")
    more, later, seconds = await bulk_load(url, events - added, seed=12)
    console.print(f"  {more:,} events in {seconds:.0f}s; rebuilding every projection")
    result = scenarios.rebuild_all(url)
    await vacuum_analyze(url)
    large = await scale.costs(url, deals + later, quick)
    rebuilt = Row(
        f"rebuild all projections, {large.events:,} events",
        large.events / result["seconds"],
        None,
        "events/s",
        target="≥ 100,000/s; memory flat",
        note=f"peak RSS {result['max_rss_mib']:.0f} MiB (largest process)",
    )
    return [rebuilt, *scale.rows(small, large)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--events", type=int, default=None, help="log size for rebuild and reads")
    parser.add_argument("--write", type=Path, default=None, help="write the table as markdown")
    parser.add_argument("--no-peer", action="store_true", help="skip the eventsourcing peer")
    parser.add_argument(
        "--scale",
        type=int,
        default=None,
        help="also measure costs on a log bulk-loaded to this size against a small one",
    )
    parser.add_argument("--deals", type=int, default=None, help="deals for the analytics rows")
    args = parser.parse_args()
    if args.deals is None:
        args.deals = 1_000 if args.quick else 100_000
    if args.events is None:
        args.events = 20_000 if args.quick else 1_000_000
    started = time.perf_counter()
    # uvloop, as under uvicorn[standard]: ours and the floors share this loop.
    rows = uvloop.run(run(args))
    console.print(table(rows))
    if args.write:
        args.write.write_text(markdown(rows, args, time.perf_counter() - started))
        console.print(f"wrote {args.write}")
    sys.exit(0)


if __name__ == "__main__":
    main()
