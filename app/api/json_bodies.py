"""JSON request bodies read exactly: a value the log cannot store as sent is a 422 naming
where, and a body whose event would be over `max_event_bytes` is a 413, before any route.

FastAPI would parse with plain `json.loads` (rounding long decimals, taking NaN) and turn
any error raised while parsing into a bare 400, so routers that take command bodies use
`ExactJsonRoute`, which checks the body before FastAPI sees it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from app.api.state import app_state
from app.domain.errors import EventTooLarge, InvalidRequest
from app.domain.json_values import MAX_DEPTH, checked_size, loads_exact


class ExactJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_exact(await self.body())
        return self._json


def _is_json(content_type: str | None) -> bool:
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def _check_body(request: ExactJsonRequest) -> None:
    """Refuse a JSON body holding a value that cannot be stored exactly, or too large for
    one event. Malformed JSON is left to FastAPI's own 422."""
    if not _is_json(request.headers.get("content-type")) or not await request.body():
        return
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return  # FastAPI's 422 names the position
    except UnicodeDecodeError:
        raise InvalidRequest("body: is not UTF-8 text") from None
    except RecursionError:
        raise InvalidRequest(f"body: is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # an integer of thousands of digits
        raise InvalidRequest("body: a number has too many digits") from None
    problem, size = checked_size(body, "body")
    if problem is not None:
        raise InvalidRequest(problem)
    limit = app_state(request.scope.get("state", {})).settings.max_event_bytes
    if size > limit:
        raise EventTooLarge("the event of this request", size, limit)


class ExactJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact(request: Request) -> Response:
            checked = ExactJsonRequest(request.scope, request.receive)
            await _check_body(checked)
            return await handler(checked)

        return exact
