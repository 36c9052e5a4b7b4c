"""The fast rebuild: every read model from the whole log, one deal at a time, in parallel.

The follower (runner.py) applies events in log order, batch by batch, reading each deal's
stored state back and writing it again per batch; replaying a long log that way costs a
state parse and a write per deal per batch. Here each deal's events are read together
(stream, then version order), folded once in memory by the same functions, and its final
rows written as COPY text files. Deals are split by stream id over worker processes (both
cores), the log's tree is computed beside them, and the files are loaded in ONE transaction
that also moves every checkpoint: readers see the old read models or the new ones, never a
half-built one, and a rebuild killed before that transaction leaves the old ones as they
were.

Only the gap-safe part of the log is replayed (transactions below the snapshot's xmin, all
finished); the follower applies the rest from the checkpoints this sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import asyncpg

from app.db import SESSION_SETTINGS
from app.domain import events as e
from app.domain.events import parse_event_json
from app.domain.flags import FlagRules, Subject, advance, changed_kinds, evaluate
from app.domain.pipeline import BUILT_IN, Catalog
from app.domain.pipeline_versions import PIPELINE_EVENT_TYPES
from app.domain.state import DealState, Recorded, pipelines_named
from app.domain.webhooks import deal_summary
from app.events import merkle
from app.events.log import Checkpoint
from app.events.pipelines import PipelineVersions, reader_on
from app.projections import step_aside, tree_blocks
from app.projections.activity import COLUMNS as ACTIVITY_COLUMNS
from app.projections.activity import Activity, activity_row
from app.projections.deals import COLUMNS as DEAL_COLUMNS
from app.projections.deals import STATE_COLUMNS, deal_row, state_row
from app.projections.flags import SUBJECT, FlagRow, FlagsProjection, due_at, reconcile
from app.projections.log_tree import NAME as LOG_TREE
from app.projections.log_tree import LogInconsistent
from app.projections.runner import Projection, _save_checkpoint, load_checkpoint, lock_key
from app.projections.stage_intervals import _FIELDS as INTERVAL_COLUMNS
from app.projections.stage_intervals import Interval, next_intervals
from app.projections.tree_blocks import Block
from app.runtime import settle_heap

DEAL_PROJECTIONS = ("deals", "stage_intervals", "activity", "flags", "blockers")
"""What the per-deal fold rebuilds; the log's tree has a pass of its own."""

# Each table the fast path writes: its columns in file order, and the projection it is of.
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "deals": ("deals", DEAL_COLUMNS),
    "deal_states": ("deals", STATE_COLUMNS),
    "stage_intervals": ("stage_intervals", INTERVAL_COLUMNS),
    "deal_activity": ("activity", ACTIVITY_COLUMNS),
    "deal_flags": (
        "flags",
        ("deal_id", "kind", "raised_at", "cleared_at", "severity", "numbers", "evaluated_at"),
    ),
    "flag_subjects": (
        "flags",
        ("deal_id", "owner", "stage", "status", "last_recorded_at", "subject", "due_at"),
    ),
    "blocker_log": ("blockers", ("blocker_id", "deal_id", "category", "raised_at", "resolved_at")),
    "flag_raisings": (
        "flags",
        ("deal_id", "kind", "raised_at", "severity", "numbers", "deal", "evaluated_at"),
    ),
    "log_leaves": (LOG_TREE, ("leaf_index", "position", "stream_id", "version", "event_hash")),
    "log_nodes": (LOG_TREE, ("height", "index", "hash")),
}
APPEND_ONLY = ("flag_raisings",)
"""Not emptied by a rebuild (the webhook outbox): rows are added where new, as a follower
would add them."""
DIFFERING = "-differing"
"""The tree worker writes the rows of new blocks to `<table>.tree.copy` and those of blocks
that differ from the stored ones to `<table>-differing.tree.copy`."""
TREE_FILES = ("log_leaves", "log_nodes", f"log_leaves{DIFFERING}", f"log_nodes{DIFFERING}")
RECONCILE = "reconcile.tree.json"
STORED = "stored.tree.json"

_DEAL_EVENTS = (
    "SELECT position, stream_id, version, type, schema_version, data::text AS data,"
    " occurred_at, recorded_at FROM events"
    " WHERE transaction_id < $1::text::xid8 AND stream_id BETWEEN $2 AND $3"
    " ORDER BY stream_id, version"
)
_TREE_EVENTS = (
    "SELECT position, stream_id, version, hash FROM events"
    " WHERE transaction_id < $1::text::xid8 ORDER BY transaction_id, position"
)


@dataclass
class DealFold:
    """One deal's read-model rows, folded from its events in version order."""

    deal_id: UUID
    rules: FlagRules
    subject: Subject = field(init=False)
    opened_position: int = 0
    last_position: int = 0
    last_recorded_at: datetime | None = None
    activity: Activity | None = None
    intervals: dict[int, Interval] = field(default_factory=dict)
    last_interval: Interval | None = None
    blockers: dict[UUID, list[Any]] = field(default_factory=dict)
    open_flags: dict[str, FlagRow] = field(default_factory=dict)
    flags: dict[tuple[str, datetime], FlagRow] = field(default_factory=dict)
    catalog: Catalog = BUILT_IN

    def __post_init__(self) -> None:
        self.subject = Subject(DealState(deal_id=self.deal_id))

    def add(self, position: int, recorded: Recorded, catalog: Catalog) -> None:
        if not self.opened_position:
            self.opened_position = position
        self.last_position = position
        at = recorded.recorded_at
        self.last_recorded_at = at
        event = recorded.event
        # flags: as FlagsProjection.apply (judged just before and just after the event), but
        # only the rules whose inputs the event changed; all of them after the last event.
        before = self.subject
        self.subject = advance(before, recorded, catalog)
        self.catalog = catalog
        kinds = changed_kinds(before, self.subject, at) if before.state.exists else None
        if kinds is None or kinds:
            if before.state.exists:
                standing = evaluate(before, at, self.rules, catalog, kinds)
                self._keep(
                    reconcile(self.deal_id, self.open_flags, standing, at, clear=False, kinds=kinds)
                )
            standing = evaluate(self.subject, at, self.rules, catalog, kinds)
            self._keep(
                reconcile(self.deal_id, self.open_flags, standing, at, clear=True, kinds=kinds)
            )
        # stage_intervals
        for interval in next_intervals(self.deal_id, self.last_interval, recorded):
            self.intervals[interval.seq] = interval
            self.last_interval = interval
        # activity
        if self.activity is None:
            self.activity = Activity(recorded.occurred_at)
        self.activity.add(recorded.occurred_at, event)
        # blockers
        if isinstance(event, e.BlockerRaised):
            self.blockers[event.blocker_id] = [
                event.blocker_id,
                self.deal_id,
                event.category,
                at,
                None,
            ]
        elif isinstance(event, e.BlockerResolved) and event.blocker_id in self.blockers:
            self.blockers[event.blocker_id][4] = at

    def _keep(self, written: list[FlagRow]) -> None:
        for row in written:
            key = (row.kind, row.raised_at)
            if row.dropped:
                self.flags.pop(key, None)
            else:
                self.flags[key] = row

    def rows(self) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """(table, row) for every row this deal has in the read models."""
        due = None
        if self.last_recorded_at is not None:  # every rule, as after the last event
            at = self.last_recorded_at
            standing = evaluate(self.subject, at, self.rules, self.catalog)
            self._keep(reconcile(self.deal_id, self.open_flags, standing, at, clear=True))
            due = due_at(self.subject, at, standing, self.rules, self.catalog)
        s = self.subject.state
        yield "deals", deal_row(s, self.opened_position, self.last_position, self.last_recorded_at)
        yield "deal_states", state_row(s)
        for interval in self.intervals.values():
            yield "stage_intervals", tuple(getattr(interval, name) for name in INTERVAL_COLUMNS)
        if self.activity is not None:
            yield "deal_activity", activity_row(self.deal_id, self.activity)
        summary: str | None = None
        for r in self.flags.values():
            numbers = json.dumps(r.numbers, sort_keys=True)
            yield (
                "deal_flags",
                (r.deal_id, r.kind, r.raised_at, r.cleared_at, r.severity, numbers, r.evaluated_at),
            )
            if r.cleared_at is None:
                summary = summary or json.dumps(deal_summary(s))
                row = (r.deal_id, r.kind, r.raised_at, r.severity, numbers, summary)
                yield "flag_raisings", (*row, r.evaluated_at)
        yield (
            "flag_subjects",
            (
                self.deal_id,
                s.owner,
                s.stage,
                s.status,
                self.last_recorded_at,
                SUBJECT.dump_json(self.subject).decode(),
                due,
            ),
        )
        for blocker in self.blockers.values():
            yield "blocker_log", tuple(blocker)


def _escaped(text: str) -> str:
    """`text` with COPY's special characters escaped. Four `str.replace` scans in C: the
    states' JSON runs to kilobytes, where `str.translate` with a table (a dict lookup per
    character) took ~35x as long and ~5 % of a rebuild."""
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    return text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# Types whose text never holds a tab, newline or backslash: written as str() gives them.
_PLAIN = frozenset({int, float, UUID, datetime, date, Decimal})


def _text(value: Any) -> str:
    """A value in PostgreSQL's COPY text format (\\N is NULL; tabs and newlines escaped)."""
    kind = type(value)
    if kind is str:
        return _escaped(value)
    if kind in _PLAIN:
        return str(value)
    if value is None:
        return "\\N"
    if kind is bool:
        return "t" if value else "f"
    if kind is bytes:
        return "\\\\x" + bytes(value).hex()
    return _escaped(str(value))


class _Files:
    """One COPY-format file per table, in a directory shared with the coordinator."""

    def __init__(self, directory: Path, tag: str, tables: Sequence[str]) -> None:
        self._directory, self._tables = directory, tables
        self._open(tag)

    def _open(self, tag: str) -> None:
        self.tag = tag
        self._handles: dict[str, IO[str]] = {
            table: (self._directory / f"{table}.{tag}.copy").open("w") for table in self._tables
        }

    def next_chunk(self, tag: str) -> None:
        """Hand the files written so far to the coordinator; write on into new ones."""
        self.close()
        _chunk(self.tag)
        self._open(tag)

    def write(self, table: str, row: tuple[Any, ...]) -> None:
        handle = self._handles.get(table)
        if handle is not None:
            handle.write("\t".join([_text(v) for v in row]) + "\n")

    def write_line(self, table: str, line: str) -> None:
        """A row already in COPY text format (the tree's: numbers, ids and hashes only)."""
        self._handles[table].write(line)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()


def _progress(done: int) -> None:
    print(f"progress {done}", flush=True)


def _chunk(tag: str) -> None:
    print(f"chunk {tag}", flush=True)


STEP_ASIDE_SECONDS = 30.0
"""How long `dealledger rebuild` waits for a projector following the projections to step
aside (it does between two batches, or two pages of a sweep: well under a second)."""

CHUNK_EVENTS = 100_000
"""A worker hands its files over every this many events (at a deal's end): the coordinator
loads them while the workers fold on, instead of loading everything, one core idle, once
they are done (a quarter of a rebuild's time at 1.9M events)."""


async def fold_deals(
    dsn: str,
    xmin: int,
    low: UUID,
    high: UUID,
    tables: Sequence[str],
    out: Path,
    tag: str,
    rules: FlagRules,
    chunk_events: int = CHUNK_EVENTS,
) -> int:
    """Fold every deal with a stream id in [low, high] into COPY files, handed over every
    `chunk_events` events (at a deal's end); returns events read."""
    connection = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
    files = _Files(out, f"{tag}.0", tables)
    versions = PipelineVersions()
    done = chunks = since = 0  # events read; chunks handed over; events folded since
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            cursor = await connection.cursor(_DEAL_EVENTS, str(xmin), low, high)
            fold: DealFold | None = None
            while rows := await cursor.fetch(5000):
                parsed: list[tuple[int, UUID, Recorded]] = []
                # Unpacked by place (the order of _DEAL_EVENTS): faster than eight lookups.
                for position, stream_id, version, type_, schema, data, occurred, at in rows:
                    if type_ in PIPELINE_EVENT_TYPES:
                        continue
                    event = parse_event_json(type_, schema, data)
                    parsed.append((position, stream_id, Recorded(event, version, occurred, at)))
                wanted = pipelines_named(recorded for _, _, recorded in parsed)
                catalog = await versions.ensure(wanted, reader_on(connection))
                for position, stream_id, recorded in parsed:
                    if fold is None or fold.deal_id != stream_id:
                        if fold is not None:
                            for table, row in fold.rows():
                                files.write(table, row)
                            if since >= chunk_events:
                                chunks, since = chunks + 1, 0
                                files.next_chunk(f"{tag}.{chunks}")
                        fold = DealFold(stream_id, rules)
                    fold.add(position, recorded, catalog)
                    since += 1
                done += len(rows)
                _progress(done)
            if fold is not None:
                for table, row in fold.rows():
                    files.write(table, row)
    finally:
        files.close()
        await connection.close()
    _chunk(files.tag)
    return done


async def fold_tree(dsn: str, xmin: int, out: Path, stored: dict[Block, bytes]) -> int:
    """The log's Merkle tree over the gap-safe log, as COPY files of the blocks that differ
    from the `stored` ones (see tree_blocks), and the list of blocks to reconcile; every
    size signed before must have the same root (else LogInconsistent). Returns its size."""
    connection = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
    files = _Files(out, "tree", TREE_FILES)
    frontier = merkle.Frontier(0, [])

    def lines_to(kind: str) -> Callable[[int, list[str]], None]:
        def write(level: int, lines: list[str]) -> None:
            table = "log_leaves" if level == tree_blocks.LEAVES else "log_nodes"
            files.write_line(f"{table}{kind}", "".join(lines))

        return write

    blocks = tree_blocks.BlockSorter(stored, lines_to(""), lines_to(DIFFERING))
    try:
        signed = {
            r["tree_size"]: r["root_hash"]
            for r in await connection.fetch("SELECT tree_size, root_hash FROM log_checkpoints")
        }
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            cursor = await connection.cursor(_TREE_EVENTS, str(xmin))
            while rows := await cursor.fetch(10000):
                for position, stream_id, version, leaf in rows:
                    size = frontier.size
                    blocks.add(
                        tree_blocks.LEAVES,
                        size,
                        tree_blocks.leaf_bytes(size, position, stream_id, version, leaf),
                        f"{size}\t{position}\t{stream_id}\t{version}\t\\\\x{leaf.hex()}\n",
                    )
                    for height, index, node in frontier.append(merkle.leaf_hash(leaf)):
                        blocks.add(
                            height,
                            index,
                            tree_blocks.node_bytes(index, node),
                            f"{height}\t{index}\t\\\\x{node.hex()}\n",
                        )
                    root = signed.get(frontier.size)
                    if root is not None and frontier.root() != root:
                        raise LogInconsistent(
                            f"the tree of the first {frontier.size} events no longer has the"
                            " root signed for it: events were changed or removed since"
                            " (run `dealledger audit`)"
                        )
                _progress(frontier.size)
        (out / RECONCILE).write_text(json.dumps(blocks.finish()))
    finally:
        files.close()
        await connection.close()
    _chunk(files.tag)
    return frontier.size


async def stored_blocks(connection: asyncpg.Connection) -> dict[Block, bytes]:
    """The digest of every block of the stored tree (see tree_blocks)."""
    await connection.execute("SET work_mem = '64MB'")  # the sorted aggregates
    rows = await connection.fetch(tree_blocks.STORED_SQL)
    await connection.execute("RESET work_mem")
    return {(level, block): digest for level, block, digest in rows}


async def _load_tree(connection: asyncpg.Connection, scratch: Path) -> None:
    """Put the stored tree right from the tree worker's files: new blocks copied in; in
    the blocks to reconcile, the rows that differ deleted and the missing ones inserted."""
    reconcile = json.loads((scratch / RECONCILE).read_text())
    for table, key, leaves in (
        ("log_leaves", ("leaf_index",), True),
        ("log_nodes", ("height", "index"), False),
    ):
        columns = list(TABLES[table][1])
        await connection.copy_to_table(
            table, source=scratch / f"{table}.tree.copy", columns=columns, format="text"
        )
        wanted = [(lv, block) for lv, block in reconcile if (lv == tree_blocks.LEAVES) is leaves]
        if not wanted:
            continue
        listed = ", ".join(columns)
        await _copy_to_temp(
            connection, f"replay_{table}", table, columns, scratch / f"{table}{DIFFERING}.tree.copy"
        )
        index = key[-1]
        in_blocks = (
            f"t.{index} >= b.block << {tree_blocks.BLOCK_BITS}"
            f" AND t.{index} < (b.block + 1) << {tree_blocks.BLOCK_BITS}"
        )
        if not leaves:
            in_blocks += " AND t.height = b.level"
        same_row = " AND ".join(f"n.{c} = t.{c}" for c in columns)
        same_key = " AND ".join(f"n.{c} = t.{c}" for c in key)
        await connection.execute(
            f"DELETE FROM {table} t USING unnest($1::int[], $2::bigint[]) AS b(level, block)"
            f" WHERE {in_blocks}"
            f" AND NOT EXISTS (SELECT FROM replay_{table} n WHERE {same_row})",
            [level for level, _ in wanted],
            [block for _, block in wanted],
        )
        await connection.execute(
            f"INSERT INTO {table} ({listed}) SELECT {listed} FROM replay_{table} n"
            f" WHERE NOT EXISTS (SELECT FROM {table} t WHERE {same_key})"
            f" ORDER BY {', '.join(key)}"
        )


@dataclass(frozen=True)
class Plan:
    xmin: int
    """Every transaction below this has ended: the events it holds are all there will be."""
    head: Checkpoint
    """The last of those events in gap-safe order (the checkpoint every projection gets)."""
    events: int


async def plan(connection: asyncpg.Connection) -> Plan:
    xmin = int(await connection.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))
    row = await connection.fetchrow(
        "SELECT transaction_id::text::bigint AS xid, position FROM events"
        " WHERE transaction_id < $1::text::xid8"
        " ORDER BY transaction_id DESC, position DESC LIMIT 1",
        str(xmin),
    )
    if row is None:
        return Plan(xmin, Checkpoint(), 0)
    events = await connection.fetchval(
        "SELECT count(*) FROM events WHERE transaction_id < $1::text::xid8", str(xmin)
    )
    return Plan(xmin, Checkpoint(row["xid"], row["position"]), int(events))


def _ranges(parts: int) -> list[tuple[UUID, UUID]]:
    """`parts` contiguous stream-id ranges covering every UUID (random ids: even shares)."""
    top = 2**128
    bounds = [top * k // parts for k in range(parts + 1)]
    return [(UUID(int=bounds[k]), UUID(int=bounds[k + 1] - 1)) for k in range(parts)]


async def _run_worker(
    args: dict[str, Any], seen: Callable[[int], None], ready: Callable[[str], None]
) -> int:
    """A worker process (`python -m app.projections.replay ARGS`), reporting progress and
    each chunk of files it has written."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.projections.replay",
        json.dumps(args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    result = 0
    try:
        async for line in process.stdout:
            word, _, value = line.decode().partition(" ")
            if word == "progress":
                seen(int(value))
            elif word == "chunk":
                ready(value.strip())
            elif word == "done":
                result = int(value)
        error = (await process.stderr.read()).decode()
        if await process.wait() != 0:
            raise RebuildFailed(args.get("kind", "?"), error.strip().splitlines()[-1:] or [""])
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return result


class RebuildFailed(Exception):
    def __init__(self, kind: str, last_lines: list[str]) -> None:
        super().__init__(f"rebuild worker ({kind}) failed: {' '.join(last_lines)}")


SCRATCH = "dealledger-rebuild-"
"""A rebuild's files go to `<temp dir>/dealledger-rebuild-<pid>-<random>`."""


def _remove_abandoned_scratch() -> None:
    """Delete the files of rebuilds whose process is gone (killed: nothing cleaned up)."""
    for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH}*-*"):
        pid = path.name.removeprefix(SCRATCH).partition("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def flag_rules_of(projections: Sequence[Projection]) -> FlagRules:
    for projection in projections:
        if isinstance(projection, FlagsProjection):
            return projection.rules
    return FlagRules()


async def rebuild_fast(
    dsn: str,
    projections: Sequence[Projection],
    *,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    chunk_events: int = CHUNK_EVENTS,
    aside_seconds: float = 0.0,
    on_aside: Callable[[], None] | None = None,
) -> int | None:
    """Rebuild `projections` (any of DEAL_PROJECTIONS and the log's tree) from the log and
    swap them in at once; returns the events replayed. When a runner follows one of them
    now, it is asked to step aside (step_aside.py) for up to `aside_seconds` (`on_aside` is
    called as it is asked); None if it has not (the caller may delegate to it: see
    runner.rebuild)."""
    names = {p.name for p in projections}
    unknown = names - {*DEAL_PROJECTIONS, LOG_TREE}
    if unknown:
        raise ValueError(f"no fast rebuild for {sorted(unknown)}")
    connection = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
    try:
        async with contextlib.AsyncExitStack() as held:
            if not await _take_locks(connection, names):
                if aside_seconds <= 0:
                    return None
                ask = await held.enter_async_context(step_aside.asking_aside(dsn, sorted(names)))
                if on_aside is not None:
                    on_aside()
                if not await _take_locks(connection, names, ask, aside_seconds):
                    return None  # leaving the block lets the followers that stepped aside go on
            return await _rebuild_locked(
                connection, dsn, projections, workers, on_progress, chunk_events
            )
    finally:
        await connection.close()


async def _take_locks(
    connection: asyncpg.Connection,
    names: set[str],
    ask: Callable[[], Awaitable[None]] | None = None,
    seconds: float = 0.0,
) -> bool:
    """Every projection's lock on `connection`, trying for up to `seconds` (asking again
    each second); all or none."""
    deadline = time.monotonic() + seconds
    asked_at = time.monotonic()
    while True:
        for name in sorted(names):
            if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(name)):
                await connection.execute("SELECT pg_advisory_unlock_all()")
                break
        else:
            return True
        if ask is None or time.monotonic() >= deadline:
            return False
        if time.monotonic() - asked_at >= 1.0:
            await ask()
            asked_at = time.monotonic()
        await asyncio.sleep(0.05)


async def _rebuild_locked(
    connection: asyncpg.Connection,
    dsn: str,
    projections: Sequence[Projection],
    workers: int | None,
    on_progress: Callable[[int], None] | None,
    chunk_events: int,
) -> int:
    """The rebuild proper, every projection's lock held on `connection`."""
    names = {p.name for p in projections}
    tables = [t for t, (owner, _) in TABLES.items() if owner in names]
    deal_tables = [t for t in tables if TABLES[t][0] in DEAL_PROJECTIONS]
    at = await plan(connection)
    parts = max(1, workers or os.cpu_count() or 1)
    progress = {"deals": [0] * parts, "tree": [0]}

    def report() -> None:
        if on_progress is not None:
            counts = progress["deals"] if deal_tables else progress["tree"]
            on_progress(min(sum(counts), at.events))

    _remove_abandoned_scratch()
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH}{os.getpid()}-") as scratch:
        jobs: list[asyncio.Task[int]] = []
        ready: asyncio.Queue[Ready] = asyncio.Queue()

        def start(args: dict[str, Any], seen: Callable[[int], None], owns: list[str]) -> None:
            def chunk(tag: str) -> None:
                ready.put_nowait((tag, owns))

            job = asyncio.create_task(_run_worker(args, seen, chunk))
            job.add_done_callback(ready.put_nowait)  # after its last chunk
            jobs.append(job)

        if deal_tables:
            rules = dataclasses.asdict(flag_rules_of(projections))
            for k, (low, high) in enumerate(_ranges(parts)):

                def seen(n: int, k: int = k) -> None:
                    progress["deals"][k] = n
                    report()

                args = {
                    "kind": "deals",
                    "dsn": dsn,
                    "xmin": at.xmin,
                    "low": str(low),
                    "high": str(high),
                    "tables": deal_tables,
                    "out": scratch,
                    "tag": str(k),
                    "rules": rules,
                    "chunk_events": chunk_events,
                }
                start(args, seen, deal_tables)
        if LOG_TREE in names:

            def tree_seen(n: int) -> None:
                progress["tree"][0] = n
                report()

            stored = [
                [*block, digest.hex()]
                for block, digest in (await stored_blocks(connection)).items()
            ]
            (Path(scratch) / STORED).write_text(json.dumps(stored))
            args = {"kind": "tree", "dsn": dsn, "xmin": at.xmin, "out": scratch}
            start(args, tree_seen, [t for t in tables if t not in deal_tables])
        try:
            projected = [p.name for p in projections]
            await _swap_in(connection, projected, jobs, ready, Path(scratch), at)
        finally:
            for job in jobs:
                job.cancel()  # a worker still running when another failed
            await asyncio.gather(*jobs, return_exceptions=True)
    return at.events


Ready = tuple[str, list[str]] | asyncio.Task[int]
"""What the coordinator waits for: a chunk of files (its tag, its tables), or a worker that
has ended (after its last chunk)."""


async def _swap_in(
    connection: asyncpg.Connection,
    names: Sequence[str],
    jobs: list[asyncio.Task[int]],
    ready: asyncio.Queue[Ready],
    scratch: Path,
    at: Plan,
) -> None:
    """One transaction: empty the tables, load each chunk of files as soon as a worker has
    written it (while the workers fold on), move every checkpoint. Readers go on reading the
    old rows until it commits; a failure anywhere rolls it all back."""
    async with connection.transaction():
        # Open while workers fold: neither idle long enough to be ended, nor holding anyone
        # back (a rebuild runs while no follower of these projections does).
        await connection.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        for name in names:
            await connection.execute(
                "INSERT INTO projection_checkpoints (name) VALUES ($1)"
                " ON CONFLICT (name) DO NOTHING",
                name,
            )
            await load_checkpoint(connection, name, for_update=True)
        emptied: set[str] = set()
        running = set(jobs)
        while running:
            item = await ready.get()
            if isinstance(item, asyncio.Task):
                item.result()  # a failed worker fails the rebuild
                running.discard(item)
                continue
            tag, tables = item
            if tag == "tree":
                await _load_tree(connection, scratch)
                continue
            for table in tables:
                path = scratch / f"{table}.{tag}.copy"
                columns = list(TABLES[table][1])
                if table in APPEND_ONLY:
                    await _add_new(connection, table, columns, path)
                else:
                    if table not in emptied:
                        # DELETE, not TRUNCATE: TRUNCATE is not MVCC-safe, a reader holding
                        # an older snapshot would find the table empty.
                        await connection.execute(f"DELETE FROM {table}")
                        emptied.add(table)
                    await connection.copy_to_table(
                        table, source=path, columns=columns, format="text"
                    )
                path.unlink()  # loaded: a long log's files need not all be kept at once
        for name in names:
            await _save_checkpoint(connection, name, at.head)


async def _copy_to_temp(
    connection: asyncpg.Connection, name: str, like: str, columns: list[str], path: Path
) -> None:
    """A temporary table `name` with `like`'s `columns` (dropped at commit), holding the rows
    of the COPY file `path`."""
    await connection.execute(
        f"CREATE TEMP TABLE {name} ON COMMIT DROP"
        f" AS SELECT {', '.join(columns)} FROM {like} LIMIT 0"
    )
    await connection.copy_to_table(name, source=path, columns=columns, format="text")


async def _add_new(
    connection: asyncpg.Connection, table: str, columns: list[str], path: Path
) -> None:
    """Rows of `path` that `table` lacks (by its key), through a temporary table."""
    listed = ", ".join(columns)
    await _copy_to_temp(connection, "replay_new", table, columns, path)
    await connection.execute(
        f"INSERT INTO {table} ({listed}) SELECT {listed} FROM replay_new"
        " ORDER BY deal_id, raised_at ON CONFLICT DO NOTHING; DROP TABLE replay_new"
    )


async def _worker(args: dict[str, Any]) -> int:
    out = Path(args["out"])
    if args["kind"] == "tree":
        stored = json.loads((out / STORED).read_text())
        blocks = {(level, block): bytes.fromhex(digest) for level, block, digest in stored}
        return await fold_tree(args["dsn"], args["xmin"], out, blocks)
    return await fold_deals(
        args["dsn"],
        args["xmin"],
        UUID(args["low"]),
        UUID(args["high"]),
        args["tables"],
        out,
        args["tag"],
        FlagRules(**args["rules"]),
        args["chunk_events"],
    )


if __name__ == "__main__":
    settle_heap()
    with contextlib.suppress(KeyboardInterrupt):
        print(f"done {asyncio.run(_worker(json.loads(sys.argv[1])))}", flush=True)
