"""The `dealledger` command line (typer)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import httpx
import typer
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from app.db import asyncpg_dsn, create_engine, owner_url, prepare
from app.domain.decide import Actor
from app.domain.errors import DomainError
from app.domain.pipeline import Pipeline, PipelineDocument
from app.domain.pipeline_versions import PublishPipeline
from app.events.audit import AuditReport
from app.events.notes import NoteError, Verifier
from app.events.store import EventStore, VerifyResult
from app.keys import ROLES, ApiKey, create_key, list_keys, revoke_key
from app.projections.runner import Projection
from app.runtime import settle_heap
from app.service.deals import CommandContext, DealService
from app.service.pipelines import PipelineService, Published
from app.service.simulation import WorkloadResult
from app.settings import load_settings
from app.telemetry import configure_logging

T = TypeVar("T")
cli = typer.Typer(
    help="dealledger: event-sourced deal progression.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
console = Console(stderr=True)


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM exits like Ctrl-C would, so exit handlers run (they stop the embedded
    PostgreSQL this process started). uvicorn re-raises the signal after its own shutdown."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


async def _until_terminated(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` until SIGTERM cancels it at an await. The handler that raises SystemExit
    wherever Python happens to be could land inside asyncpg's protocol callback: the
    cancelled tasks then waited forever on a reply it had half read (seen under load)."""
    task = asyncio.ensure_future(work)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _database_url() -> str:
    """The service's URL, after migrating and granting (see app.db.prepare)."""
    return prepare(load_settings())


@cli.command("migrate")
def migrate_command() -> None:
    """Apply the database migrations (Alembic) up to the newest revision."""
    _database_url()
    console.print("[green]database migrated[/green]")


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    projector: bool = typer.Option(
        True, help="Run the projections in this process (else run `dealledger project`)."
    ),
    dev: bool = typer.Option(
        False, "--dev", help="Let requests without a key act as admin. Local use only."
    ),
    workers: int = typer.Option(
        1,
        min=1,
        help="API processes over one database; one of them is elected projector at a time.",
    ),
) -> None:
    """Migrate, then serve the HTTP API with uvicorn (and the projections, by default)."""
    import uvicorn

    from app.main import create_app

    _exit_cleanly_on_sigterm()
    settings = load_settings()
    settings = settings.model_copy(
        update={"run_projector": projector, "dev_mode": dev or settings.dev_mode}
    )
    url = prepare(settings)
    if settings.dev_mode:
        console.print(
            "[bold red]WARNING: dev mode: requests without an API key act as ADMIN."
            " Never expose this server.[/bold red]"
        )
    if not settings.database_url:
        console.print(
            f"embedded PostgreSQL, data in [bold]{settings.data_dir}[/bold];"
            ' open it with: psql "$(dealledger db-url)"'
        )
    console.print(f"dealledger listening on [bold]http://{host}:{port}[/bold]")
    embedded = None if settings.database_url else settings.data_dir
    configure_logging(settings.log_format)
    if workers > 1:
        # uvicorn's workers import the app afresh: they learn the (migrated) database and
        # these flags from the environment. The embedded server is started here, once; it
        # is not restarted if it dies (one worker restarting it for all would race).
        os.environ.update(
            DATABASE_URL=url,
            DEALLEDGER_RUN_PROJECTOR=str(settings.run_projector).lower(),
            DEALLEDGER_DEV_MODE=str(settings.dev_mode).lower(),
        )
        console.print(f"{workers} worker processes; one projects at a time (elected)")
        uvicorn.run(
            "app.main:app_from_environment",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
        )
        return
    app = create_app(settings, database_url=url, supervise=embedded)
    settle_heap()
    # Our own middleware logs each request with its id; uvicorn's access log would not.
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


@cli.command("db-url")
def db_url(
    owner: bool = typer.Option(
        False, "--owner", help="The schema owner's URL (migrations), not the service role's."
    ),
) -> None:
    """Print the database URL the service uses (starting the embedded server if it is the
    one), e.g. for `psql "$(dealledger db-url)"`."""
    settings = load_settings()
    url = _database_url()
    typer.echo(owner_url(settings) if owner else url)


async def _verify(url: str, deal: UUID | None) -> VerifyResult:
    engine = create_engine(url, pool_size=1)
    store = EventStore(engine)
    try:
        total = await store.count(deal)
        with Progress(
            TextColumn("verifying"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} events"),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("verify", total=total)
            result = await store.verify(
                deal, on_progress=lambda done: progress.update(task, completed=done)
            )
        return result
    finally:
        await engine.dispose()


@cli.command()
def verify(deal: UUID | None = typer.Argument(None, help="One deal id; all when omitted.")) -> None:
    """Recompute the hash chain of one deal or the whole log; list every broken link, exit
    1 if there is one."""
    result = asyncio.run(_verify(_database_url(), deal))
    if result.valid:
        typer.echo(f"valid: {result.events_checked} events checked, head {result.head_hash}")
        return
    for broken in result.breaks:
        typer.echo(
            f"INVALID at stream {broken.stream_id} version {broken.version}: {broken.reason}"
        )
    if result.breaks_total > len(result.breaks):
        typer.echo(f"... and {result.breaks_total - len(result.breaks):,} more")
    typer.echo(f"{result.breaks_total:,} of {result.events_checked:,} events do not verify")
    raise typer.Exit(1)


@cli.command()
def project() -> None:
    """Run the projections only: catch up, then follow the log (one active runner each)."""
    from app.projections.registry import followers_for
    from app.projections.runner import ProjectionRunner

    _exit_cleanly_on_sigterm()
    settings = load_settings()
    url = prepare(settings)
    followers = followers_for(settings)
    runner = ProjectionRunner(
        asyncpg_dsn(url),
        followers,
        batch_size=settings.projection_batch_size,
        tick_interval=settings.flag_sweep_seconds,
    )
    console.print(f"projecting {', '.join(p.name for p in followers)}; Ctrl-C to stop")
    configure_logging(settings.log_format)
    settle_heap()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_until_terminated(runner.run()))


async def _rebuild(
    url: str,
    projections: dict[str, Projection],
    names: list[str],
    batch_size: int,
    workers: int,
) -> dict[str, tuple[int, float]]:
    from app.projections.replay import STEP_ASIDE_SECONDS, rebuild_fast
    from app.projections.runner import rebuild

    engine = create_engine(url, pool_size=1)
    try:
        total = await EventStore(engine).count()
    finally:
        await engine.dispose()
    results: dict[str, tuple[int, float]] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} events"),
        TextColumn("{task.fields[rate]:,.0f} events/s"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        # Folded per deal over every core and swapped in at once; a projector following
        # them is asked to step aside meanwhile. One that does not (within STEP_ASIDE_SECONDS)
        # has each reset in place and replays it itself (below).
        task = progress.add_task(f"rebuild {', '.join(names)}", total=total, rate=0.0)
        started = time.monotonic()

        def fast(done: int) -> None:
            elapsed = max(time.monotonic() - started, 1e-9)
            progress.update(task, completed=done, rate=done / elapsed)

        done = await rebuild_fast(
            asyncpg_dsn(url),
            [projections[name] for name in names],
            workers=workers or None,
            on_progress=fast,
            aside_seconds=STEP_ASIDE_SECONDS,
            on_aside=lambda: console.print(
                "a projector follows these projections: asked it to step aside until the"
                " rebuild is swapped in (it follows on from there)"
            ),
        )
        if done is not None:
            progress.update(task, completed=done)
            seconds = time.monotonic() - started
            return {name: (done, seconds) for name in names}
        progress.remove_task(task)
        for name in names:
            task = progress.add_task(f"rebuild {name}", total=total, rate=0.0)
            started = time.monotonic()

            def advance(done: int, task: TaskID = task, started: float = started) -> None:
                elapsed = max(time.monotonic() - started, 1e-9)
                progress.update(task, completed=done, rate=done / elapsed)

            def delegated(name: str = name) -> None:
                console.print(
                    f"{name}: the projector following it did not step aside within"
                    f" {STEP_ASIDE_SECONDS:.0f}s; reset it in place and watching that"
                    " projector replay it"
                )

            done = await rebuild(
                asyncpg_dsn(url),
                projections[name],
                batch_size=batch_size,
                on_progress=advance,
                on_delegate=delegated,
            )
            results[name] = (done, time.monotonic() - started)
    return results


@cli.command("rebuild")
def rebuild_command(
    name: str | None = typer.Argument(None, help="One projection; all when omitted."),
    follow: bool = typer.Option(
        False, help="After rebuilding, go on following the log live (as `project` does)."
    ),
) -> None:
    """Drop and replay projections from the start of the log, with progress."""
    from app.projections.registry import projections_for

    settings = load_settings()
    projections = projections_for(settings)
    if name is not None and name not in projections:
        console.print(f"[red]no projection {name!r}[/red]; known: {', '.join(projections)}")
        raise typer.Exit(2)
    url = prepare(settings)
    names = [name] if name else list(projections)
    from app.projections.replay import RebuildFailed

    try:
        results = asyncio.run(
            _rebuild(url, projections, names, settings.rebuild_batch_size, settings.rebuild_workers)
        )
    except RebuildFailed as failed:
        console.print(f"[red]{failed}[/red]; the read models were left as they were")
        raise typer.Exit(1) from failed
    for projection, (events, seconds) in results.items():
        rate = events / seconds if seconds else 0.0
        typer.echo(f"{projection}: {events} events in {seconds:.2f}s ({rate:,.0f} events/s)")
    if follow:
        project()


async def _demo(url: str, deals: int, seed: int, days: float) -> tuple[WorkloadResult, int]:
    from app.service.demo_showcase import NEGLECTED_SHARE, set_quarter_targets, showcase
    from app.service.simulation import lay_down_history

    engine = create_engine(url, pool_size=2)
    store = EventStore(engine)
    try:
        existing = await store.count()
        if existing:
            return WorkloadResult(), existing
        with Progress(
            TextColumn("laying down {task.fields[deals]} deals"),
            TextColumn("{task.completed:,} commands"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("demo", total=None, deals=deals)
            end = datetime.now(UTC)
            result = await lay_down_history(
                store,
                deals=deals,
                seed=seed,
                days=days,
                end=end,
                on_progress=lambda done: progress.update(task, completed=done),
                scripted=showcase,
                neglected_share=NEGLECTED_SHARE,
            )
        await _with_connection(url, lambda connection: set_quarter_targets(connection, end))
        return result, 0
    finally:
        await store.followers.settled()
        await engine.dispose()


@cli.command()
def demo(
    deals: int = typer.Option(200, min=1, max=100_000, help="How many deals to open."),
    seed: int = typer.Option(7, help="Same seed, same pipeline."),
    days: float = typer.Option(120, min=1, help="How far back the first deals open."),
) -> None:
    """Load a generated pipeline (an empty log only): deals opened over the past DAYS, worked
    at their own rhythm through the real service on a simulated clock; some won, some lost."""
    url = prepare(load_settings())
    result, existing = asyncio.run(_demo(url, deals, seed, days))
    if existing:
        console.print(
            f"[red]the log already holds {existing:,} events[/red]; demo loads an empty one"
        )
        raise typer.Exit(1)
    typer.echo(
        f"{len(result.deals)} deals, {result.events:,} events ({result.refused:,} commands"
        " refused by the rules, as in life), with a few textbook problem deals and this"
        " quarter's targets. `dealledger serve --dev --port 8001` (a port of its own if"
        " another server runs), then curl localhost:8001/v1/pipeline/health"
    )


projections_cli = typer.Typer(help="The projections: how they stand.", no_args_is_help=True)
cli.add_typer(projections_cli, name="projections")


@projections_cli.command("status")
def projections_status() -> None:
    """Each projection's (and the webhook outbox's) position, lag in events and seconds, and
    stop (an event it cannot apply); exit 1 if one is stopped."""
    from app.projections.health import Health, health
    from app.projections.registry import FOLLOWERS
    from app.projections.runner import projector_holder, rebuild_holder

    url = _database_url()
    state: Health = asyncio.run(_with_connection(url, lambda c: health(c, list(FOLLOWERS))))
    holder = asyncio.run(_with_connection(url, projector_holder))
    typer.echo(f"projector: {holder or 'none running'}")
    rebuilding = asyncio.run(_with_connection(url, rebuild_holder))
    if rebuilding:
        typer.echo(f"rebuild: {rebuilding} (the projector steps aside until it is swapped in)")
    for p in state.projections:
        line = f"{p.name:<16} position {p.position:>12,}  lag {p.lag:>9,}  {p.lag_seconds:>8.1f}s"
        if p.stopped_at is not None:
            line += f"  STOPPED at position {p.stopped_at:,} since {p.stopped_since:%Y-%m-%d %H:%M}"
            line += f": {p.stopped_by}"
        typer.echo(line)
    if state.oldest_transaction_seconds is not None:
        typer.echo(f"oldest open transaction: {state.oldest_transaction_seconds:.1f}s")
    if state.stopped:
        raise typer.Exit(1)


keys_cli = typer.Typer(help="API keys: bearer tokens with one role each.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


async def _with_connection(url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await work(connection)
    finally:
        await connection.close()


def _login_name(role: str) -> str:
    """A name for a key created without one (`--name "$USER"` with USER unset)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment or the password database
        return f"{role} (cli)"


@keys_cli.command("create")
def keys_create(
    role: str = typer.Option(..., help=f"One of: {', '.join(ROLES)}."),
    name: str = typer.Option(
        "", help="Who or what uses it, e.g. gmail-sync or rick.rep (default: your login)."
    ),
) -> None:
    """Create a key and print its token once (only a hash is stored)."""
    if role not in ROLES:
        console.print(f"[red]role must be one of: {', '.join(ROLES)}[/red]")
        raise typer.Exit(2)
    name = name.strip() or _login_name(role)
    if len(name) > 200:
        console.print("[red]name must be at most 200 characters[/red]")
        raise typer.Exit(2)
    url = _database_url()
    key, token = asyncio.run(
        _with_connection(url, lambda c: create_key(c, role=role, name=name, created_by="cli"))
    )
    console.print(f"created {key.role} key {key.key_id} ({key.name}); the token is shown once:")
    typer.echo(token)


@keys_cli.command("list")
def keys_list() -> None:
    """List keys (never their tokens)."""
    url = _database_url()

    async def every(connection: asyncpg.Connection) -> list[ApiKey]:
        found: list[ApiKey] = []
        while page := await list_keys(connection, after_seq=found[-1].seq if found else 0):
            found += page
        return found

    for key in asyncio.run(_with_connection(url, every)):
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        typer.echo(
            f"{key.key_id}  {key.role:<8} {key.hint}…  {key.created_at:%Y-%m-%d}  {state:<18}"
            f" {key.name}"
        )


@keys_cli.command("revoke")
def keys_revoke(key_id: UUID = typer.Argument(..., help="The key's id (from keys list).")) -> None:
    """Revoke a key: it stops working at once."""
    url = _database_url()
    key = asyncio.run(_with_connection(url, lambda c: revoke_key(c, key_id)))
    if key is None:
        console.print(f"[red]no key {key_id}[/red]")
        raise typer.Exit(1)
    typer.echo(f"revoked {key.key_id} ({key.name})")


def _verifiers(files: list[Path]) -> list[Verifier]:
    try:
        return [Verifier.parse(file.read_text()) for file in files]
    except (OSError, NoteError) as error:
        console.print(f"[red]public key: {error}[/red]")
        raise typer.Exit(2) from error


@cli.command()
def audit(
    checkpoint: list[Path] = typer.Option(
        ..., help="A signed checkpoint you kept, or a directory of them (repeatable)."
    ),
    public_key: list[Path] = typer.Option(
        [], help="The log's verifier key (repeatable: old keys after a rotation)."
    ),
    url: str | None = typer.Option(
        None, help="Read the log through this service's HTTP API instead of the database."
    ),
    api_key: str | None = typer.Option(
        None, envvar="DEALLEDGER_API_KEY", help="Bearer key for --url (an auditor's)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check the whole log against checkpoints you kept: signatures, every event's hash,
    the Merkle roots; names the leaf that differs, or the truncation. Exit 1 if anything
    does not hold."""
    from app.service.log_audit import audit_database, audit_http, checkpoint_files, open_checkpoints

    files = checkpoint_files(checkpoint)
    if not files:
        console.print("[red]no checkpoint files found[/red]")
        raise typer.Exit(2)
    verifiers = _verifiers(public_key)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if not verifiers:
        # Without a key of your own you trust the service to name its key: say so.
        console.print("[yellow]no --public-key: using the key the service publishes[/yellow]")
        if url:
            key = httpx.get(f"{url.rstrip('/')}/v1/log/public-key", headers=headers)
            verifiers = [Verifier.parse(key.raise_for_status().text)]
        else:
            from app.projections.log_tree import load_signer

            verifiers = [load_signer(load_settings()).verifier]
    heads, bad = open_checkpoints(files, verifiers)
    database = None if url else asyncpg_dsn(_database_url())

    async def run(done: Callable[[int], None]) -> AuditReport:
        if database is not None:
            return await audit_database(database, heads, done)
        async with httpx.AsyncClient(base_url=str(url), headers=headers, timeout=60) as http:
            return await audit_http(http, heads, done)

    with Progress(
        TextColumn("auditing"), TextColumn("{task.completed:,} events"), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("audit")
        report = asyncio.run(run(lambda n: progress.update(task, completed=n)))
    result = report.as_json()
    result["signature_failures"] = bad
    result["valid"] = report.valid and not bad
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for problem in bad:
            typer.echo(f"BAD SIGNATURE {problem}")
        for entry in report.checkpoints:
            typer.echo(f"checkpoint {entry['tree_size']:>10,}: {entry['status']}")
        for finding in report.findings:
            typer.echo(f"{finding.kind.upper()}: {finding.message}")
        verdict = "valid" if result["valid"] else "INVALID"
        typer.echo(f"{verdict}: {report.events:,} events against {len(heads)} checkpoints")
    if not result["valid"]:
        raise typer.Exit(1)


checkpoints_cli = typer.Typer(help="Signed checkpoints of the log.", no_args_is_help=True)
cli.add_typer(checkpoints_cli, name="checkpoints")


@checkpoints_cli.command("export")
def checkpoints_export(
    directory: Path = typer.Argument(..., help="Where to write them (kept elsewhere)."),
) -> None:
    """Write each signed checkpoint as DIR/<size>.checkpoint and the verifier keys as
    DIR/<key id>.vkey; files already there are kept, and one that differs from the log's
    (a second history signed for the same size) is reported, exit 1."""
    url = _database_url()
    rows = asyncio.run(
        _with_connection(
            url,
            lambda c: c.fetch(
                "SELECT tree_size, note, verifier_key FROM log_checkpoints ORDER BY tree_size"
            ),
        )
    )
    directory.mkdir(parents=True, exist_ok=True)
    written = kept = 0
    conflicts = []
    for row in rows:
        vkey = Verifier.parse(row["verifier_key"])
        key_file = directory / f"{vkey.name.replace('/', '_')}-{vkey.key_id.hex()}.vkey"
        if not key_file.exists():
            key_file.write_text(row["verifier_key"] + "\n")
        target = directory / f"{row['tree_size']:015d}.checkpoint"
        if not target.exists():
            target.write_text(row["note"])
            written += 1
        elif target.read_text() == row["note"]:
            kept += 1
        else:
            conflicts.append(target)
    typer.echo(f"{written} written, {kept} already there, to {directory}")
    for target in conflicts:
        typer.echo(f"DIFFERS: {target} is not the checkpoint the log now has for that size")
    if conflicts:
        raise typer.Exit(1)


pipelines_cli = typer.Typer(
    help="Pipelines: stages, criteria and thresholds as versioned documents.",
    no_args_is_help=True,
)
cli.add_typer(pipelines_cli, name="pipelines")


async def _pipeline_work(url: str, work: Callable[[PipelineService], Awaitable[T]]) -> T:
    engine = create_engine(url, pool_size=2)
    store = EventStore(engine)
    try:
        return await work(PipelineService(DealService(store)))
    finally:
        await store.followers.settled()  # the projectors' wake, sent before disposing
        await engine.dispose()


def _read_document(path: Path) -> PipelineDocument:
    """A pipeline document from a YAML or JSON file (JSON by its .json suffix)."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        return PipelineDocument.model_validate(raw)
    except (OSError, ValueError, yaml.YAMLError) as error:  # ValidationError is a ValueError
        console.print(f"[red]{path}: {error}[/red]")
        raise typer.Exit(2) from None


@pipelines_cli.command("apply")
def pipelines_apply(
    file: Path = typer.Argument(..., help="A pipeline document, YAML or JSON."),
    note: str = typer.Option("", help="Why this version (kept in the log)."),
) -> None:
    """Create the pipeline, or publish its next version (nothing when unchanged)."""
    document = _read_document(file)
    url = _database_url()
    actor = Actor(id="cli", role="admin", name=_login_name("admin"))

    async def publish(pipelines: PipelineService) -> Published:
        known = await pipelines.deals.latest_pipeline(document.key)
        command = PublishPipeline(document, creating=known is None, note=note.strip() or None)
        return await pipelines.publish(command, CommandContext(actor))

    try:
        result = asyncio.run(_pipeline_work(url, publish))
    except DomainError as error:
        console.print(f"[red]{error.detail}[/red]")
        raise typer.Exit(2) from None
    state = "published" if result.changed else "unchanged at"
    typer.echo(f"{result.pipeline.key}: {state} version {result.pipeline.version}")


def _version_of(key: str, version: int | None) -> Pipeline:
    url = _database_url()

    async def find(pipelines: PipelineService) -> Pipeline:
        if version is None:
            return (await pipelines.versions(key))[-1]
        return await pipelines.version(key, version)

    try:
        return asyncio.run(_pipeline_work(url, find))
    except DomainError as error:
        console.print(f"[red]{error.detail}[/red]")
        raise typer.Exit(1) from None


@pipelines_cli.command("show")
def pipelines_show(
    key: str = typer.Argument(..., help="The pipeline's key, e.g. default."),
    version: int | None = typer.Option(None, min=1, help="A version (default: the latest)."),
) -> None:
    """The pipeline's stages, probabilities, criteria and thresholds, readably."""
    pipeline = _version_of(key, version)
    typer.echo(f"{pipeline.key} v{pipeline.version}: {pipeline.label}")
    for stage in pipeline.stages:
        late = " (late)" if stage.key in pipeline.late_stages else ""
        typer.echo(
            f"  {stage.key}{late}: {stage.probability:.0%}, {stage.expected_days} days expected"
        )
        for criterion in stage.exit_criteria:
            typer.echo(f"    - {criterion.key}: {criterion.label}")
    typer.echo("  won: 100%")


@pipelines_cli.command("export")
def pipelines_export(
    key: str = typer.Argument(..., help="The pipeline's key, e.g. default."),
    version: int | None = typer.Option(None, min=1, help="A version (default: the latest)."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of YAML."),
) -> None:
    """The pipeline's document (without its version), ready to edit and apply."""
    document = _version_of(key, version).document().model_dump(mode="json", exclude_none=True)
    if as_json:
        typer.echo(json.dumps(document, indent=2))
    else:
        typer.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)


def main() -> None:
    cli()
