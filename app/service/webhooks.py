"""Sending webhooks: Standard Webhooks signatures, a guarded HTTP client, and the workers
that drain the outbox (any number, in any number of processes).

A worker leases due deliveries (SKIP LOCKED), sends each with fresh `webhook-timestamp` and
`webhook-signature` headers and the same `webhook-id`, and records the answer under its
lease. Killed between sending and recording, the lease runs out and the delivery is sent
again with the same id: at least once, deduplicable by the receiver.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import secrets
import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpcore
import httpx
from standardwebhooks.webhooks import Webhook

from app.db import SESSION_SETTINGS, close_quickly
from app.domain.delivery_schedule import after_attempt, parse_retry_after
from app.domain.destinations import (
    DestinationRefused,
    IPAddress,
    literal_address,
    parse_destination,
    refusal,
)
from app.projections.webhook_deliveries import (
    WAKE_CHANNEL,
    Attempted,
    Claimed,
    claim,
    record_attempts,
)
from app.settings import Settings
from app.telemetry import WEBHOOK_DELIVERIES, WEBHOOK_LAG_SECONDS

log = logging.getLogger("dealledger.webhooks")
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature_headers(
    message_id: str, secrets_in_use: Sequence[str], at: datetime, body: str
) -> dict[str, str]:
    """The three Standard Webhooks headers; one signature per secret in use (two while a
    rotated secret overlaps the new one)."""
    signatures = [Webhook(secret).sign(message_id, at, body) for secret in secrets_in_use]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
        "user-agent": "dealledger-webhooks/1",
    }


@dataclass(frozen=True)
class DeliveryPolicy:
    schedule: tuple[float, ...]
    timeout_seconds: float
    lease_seconds: float
    allow_http: bool
    allowed_hosts: frozenset[str]
    max_response_bytes: int
    disable_after: timedelta
    link_base: str

    @classmethod
    def of(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            schedule=settings.webhooks_retry_schedule,
            timeout_seconds=settings.webhooks_timeout_seconds,
            lease_seconds=settings.webhooks_lease_seconds,
            allow_http=settings.webhooks_allow_http,
            allowed_hosts=frozenset(settings.webhooks_allowed_hosts),
            max_response_bytes=settings.webhooks_max_response_bytes,
            disable_after=timedelta(days=settings.webhooks_disable_after_days),
            link_base=settings.public_url,
        )


async def resolve(host: str, port: int) -> list[IPAddress]:
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # no such name (gaierror), or not a name DNS can carry
        return []
    found = [literal_address(str(info[4][0])) for info in infos]
    return list(dict.fromkeys(a for a in found if a is not None))


async def check_destination(url: str, policy: DeliveryPolicy) -> None:
    """Refuse (DestinationRefused, a 422) a URL the sender would not call. A name that does
    not resolve yet is accepted: every attempt checks the address it connects to anyway."""
    destination = parse_destination(url, allow_http=policy.allow_http)
    addresses = await resolve(destination.host, destination.port)
    why = refusal(destination.host, addresses, policy.allowed_hosts) if addresses else None
    if why is not None:
        raise DestinationRefused(why, url=url)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy allows, checked on the address actually
    connected to (a name that resolved to a public address at subscription time and to a
    private one now is refused now)."""

    def __init__(self, allowed_hosts: Collection[str]) -> None:
        self.allowed_hosts = allowed_hosts
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host.lower(), port)
        why = refusal(host.lower(), addresses, self.allowed_hosts)
        if why is not None:
            raise httpcore.ConnectError(f"refused: {why}")
        return await self.inner.connect_tcp(
            str(addresses[0]), port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are never sent to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_client(policy: DeliveryPolicy) -> httpx.AsyncClient:
    """No redirects followed, no proxies from the environment, connections checked."""
    transport = httpx.AsyncHTTPTransport(trust_env=False, retries=0)
    transport._pool._network_backend = GuardedBackend(policy.allowed_hosts)
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(policy.timeout_seconds),
    )


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    retry_after: str | None = None
    error: str | None = None


async def send(
    client: httpx.AsyncClient, policy: DeliveryPolicy, claimed: Claimed, now: datetime
) -> Answer:
    """One attempt: signed now, the body as stored; reads at most a small part of the answer."""
    try:
        parse_destination(claimed.url, allow_http=policy.allow_http)
        headers = signature_headers(claimed.message_id, claimed.secrets, now, claimed.payload)
        # One deadline for the whole exchange (httpx's timeouts are per read): a receiver
        # trickling bytes cannot outlast the lease.
        async with (
            asyncio.timeout(policy.timeout_seconds),
            client.stream(
                "POST", claimed.url, content=claimed.payload.encode(), headers=headers
            ) as response,
        ):
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= policy.max_response_bytes:
                    break
            return Answer(response.status_code, response.headers.get("retry-after"))
    except DestinationRefused as refused:
        return Answer(None, error=refused.detail)
    except TimeoutError:
        return Answer(None, error=f"no answer within {policy.timeout_seconds:g} s")
    except httpx.HTTPError as error:
        return Answer(None, error=f"{type(error).__name__}: {error}"[:500])


class DeliveryWorker:
    """Claims due deliveries and sends them, up to `concurrency` at a time, woken by the
    outbox's NOTIFY (polling as a fallback), until cancelled."""

    def __init__(
        self,
        dsn: str,
        policy: DeliveryPolicy,
        *,
        concurrency: int = 16,
        poll_interval: float = 1.0,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.dsn = dsn
        self.policy = policy
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.rng = rng or random.Random()
        self.clock = clock
        """When each attempt is signed (tests step it to tell attempts apart)."""
        self._wake = asyncio.Event()

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._run_once()
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception:
                log.exception("webhook worker failed; retrying in %.0fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _run_once(self) -> None:
        connection = await asyncpg.connect(self.dsn, server_settings=SESSION_SETTINGS)
        try:
            await connection.add_listener(WAKE_CHANNEL, lambda *_: self._wake.set())
            async with guarded_client(self.policy) as client:
                await self._loop(connection, client)
        finally:
            await close_quickly(connection)

    async def _loop(self, connection: asyncpg.Connection, client: httpx.AsyncClient) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        done: asyncio.Queue[Attempted] = asyncio.Queue()
        # Answers are recorded in batches on a connection of their own, so neither claiming
        # nor sending waits for one round trip per delivery.
        recorder = asyncio.create_task(self._record(done))
        try:
            while True:
                self._wake.clear()
                if recorder.done():
                    recorder.result()  # its failure (a lost database) is this loop's
                room = self.concurrency - len(in_flight)
                claimed = []
                if room > 0:
                    claimed = await claim(
                        connection, lease_seconds=self.policy.lease_seconds, limit=room
                    )
                for item in claimed:
                    task = asyncio.create_task(self._attempt(client, done, item))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if claimed and len(claimed) == room:
                    continue
                woken = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait(
                        [woken, recorder, *in_flight],
                        timeout=self.poll_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    woken.cancel()
        finally:
            for task in [*in_flight, recorder]:
                task.cancel()
            await asyncio.gather(*in_flight, recorder, return_exceptions=True)

    async def _attempt(
        self, client: httpx.AsyncClient, done: asyncio.Queue[Attempted], claimed: Claimed
    ) -> None:
        now = self.clock()
        answer = await send(client, self.policy, claimed, now)
        result = after_attempt(
            answer.status_code,
            attempts_made=claimed.attempts,
            schedule=self.policy.schedule,
            jitter=self.rng.uniform(-1, 1),
            retry_after=parse_retry_after(answer.retry_after, now),
            failing_since=claimed.failing_since,
            now=now,
            disable_after=self.policy.disable_after,
        )
        refused = answer.error is not None and "refused:" in answer.error
        WEBHOOK_DELIVERIES.labels("refused" if refused else result.outcome).inc()
        if result.status == "delivered":
            lag = datetime.now(UTC) - claimed.event_at
            WEBHOOK_LAG_SECONDS.observe(max(lag.total_seconds(), 0.0))
        log.info(
            "webhook %s to %s: %s",
            claimed.message_id,
            claimed.url,
            result.outcome,
            extra={
                "delivery_id": str(claimed.delivery_id),
                "attempt": claimed.attempts,
                "status_code": answer.status_code,
                "error": answer.error,
                "retry_in": result.retry_in,
            },
        )
        if result.disable_reason is not None:
            log.warning(
                "webhook endpoint %s disabled: %s", claimed.endpoint_id, result.disable_reason
            )
        done.put_nowait(
            Attempted(
                claimed,
                result.status,
                answer.status_code,
                answer.error,
                result.retry_in,
                result.disable_reason,
            )
        )

    async def _record(self, done: asyncio.Queue[Attempted]) -> None:
        connection = await asyncpg.connect(self.dsn, server_settings=SESSION_SETTINGS)
        try:
            while True:
                batch = [await done.get()]
                while not done.empty() and len(batch) < 500:
                    batch.append(done.get_nowait())
                await record_attempts(connection, batch)
        finally:
            await close_quickly(connection)


@contextlib.asynccontextmanager
async def delivering(dsn: str, settings: Settings) -> Any:
    """A delivery worker running in this process while the block runs."""
    worker = DeliveryWorker(
        dsn, DeliveryPolicy.of(settings), concurrency=settings.webhooks_concurrency
    )
    task = asyncio.create_task(worker.run(), name="webhook-worker")
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, timeout=10)
