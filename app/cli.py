"""The `dealledger` command line (typer)."""

from __future__ import annotations

import asyncio
from uuid import UUID

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from app.db import create_engine, migrate, resolve_database_url
from app.events.store import EventStore, VerifyResult
from app.settings import load_settings

cli = typer.Typer(help="dealledger: event-sourced deal progression.", no_args_is_help=True)
console = Console(stderr=True)


def _database_url() -> str:
    return resolve_database_url(load_settings())


@cli.command("migrate")
def migrate_command() -> None:
    """Apply the database migrations (Alembic) up to the newest revision."""
    url = _database_url()
    migrate(url)
    console.print("[green]database migrated[/green]")


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Migrate, then serve the HTTP API with uvicorn."""
    import uvicorn

    from app.main import create_app

    settings = load_settings()
    url = resolve_database_url(settings)
    migrate(url)
    console.print(f"dealledger listening on [bold]http://{host}:{port}[/bold]")
    uvicorn.run(create_app(settings, database_url=url), host=host, port=port, log_level="info")


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
    """Recompute the hash chain of one deal or the whole log; exit 1 on any broken link."""
    result = asyncio.run(_verify(_database_url(), deal))
    if result.valid:
        typer.echo(f"valid: {result.events_checked} events checked, head {result.head_hash}")
        return
    typer.echo(
        f"INVALID at stream {result.first_invalid_stream} version "
        f"{result.first_invalid_version}: {result.reason}"
    )
    raise typer.Exit(1)


def main() -> None:
    cli()
