"""A webhook receiver on loopback for tests: a tiny HTTP/1.1 server that records every
request and answers with the statuses it is told to (200 once the script runs out)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def message_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    answers: list[int] = field(default_factory=list)
    """Statuses to answer in turn; 200 once they run out."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers (e.g. Retry-After)."""
    hold: asyncio.Event | None = None
    """When set: each request waits for it before it is answered."""
    delay: float = 0.0
    """Seconds to think before answering."""
    endless: bool = False
    """Answer 200 with a body announced as 100 MB of which only 64 KiB ever comes."""
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(path, headers, body))
            self.arrived.set()
            if self.hold is not None:
                await self.hold.wait()
            await asyncio.sleep(self.delay)
            if self.endless:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n")
                writer.write(b"x" * 65536)
                await writer.drain()
                await reader.read()  # until the sender hangs up
                return
            status = self.answers.pop(0) if self.answers else 200
            extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
            status_line = f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n"
            writer.write(f"{status_line}{extra}\r\nok".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def verified(self, secret: str) -> list[Any]:
        """Every request's body, each verified by standardwebhooks' own Webhook.verify."""
        return [Webhook(secret).verify(r.body, r.headers) for r in self.requests]

    async def wait_for(self, count: int, within: float = 20) -> list[Received]:
        """Wait until at least `count` requests arrived."""
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.requests


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    """A receiver listening on 127.0.0.1 (a free port) while the block runs."""
    receiver = receiver or Receiver()
    server = await asyncio.start_server(receiver._handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        server.close()
        if receiver.hold is not None:
            receiver.hold.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)
