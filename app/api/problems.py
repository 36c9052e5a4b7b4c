"""RFC 9457 problem documents: one handler per error family, no try/except in routes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.domain.errors import DatabaseUnavailable, DomainError

PROBLEM_JSON = "application/problem+json"
_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def problem_response(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    body.update(extensions)
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {})
    )


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"location": _location(error["loc"]), "message": error["msg"], "type": error["type"]}
        for error in exc.errors()
    ]
    summary = "; ".join(f"{e['location']}: {e['message']}" for e in errors)
    return problem_response(
        422, "Request is not valid", summary, type_="/problems/validation", errors=errors
    )


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = allowed
    return problem_response(exc.status_code, None, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method the API document gives this path (Starlette names one route's at most)."""
    path = request.scope["path"]
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        parts = re.split(r"\{[^/}]+\}", template)
        if re.fullmatch("[^/]+".join(re.escape(part) for part in parts), path):
            methods |= {method.upper() for method in operations if method in _METHODS}
    return ", ".join(sorted(methods))


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return problem_of(exc)


def problem_of(error: DomainError) -> JSONResponse:
    return JSONResponse(
        error.problem(), status_code=error.status, media_type=PROBLEM_JSON, headers=error.headers
    )


class UnavailableGuard:
    """Outermost: a database outage met outside a route (authentication, idempotent replay)
    is a 503 problem with Retry-After too, not a bare 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except DatabaseUnavailable as outage:
            if started:
                raise
            await problem_of(outage)(scope, receive, send)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(DomainError, _domain)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; some problems add fields (e.g. unmet_criteria).",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "additionalProperties": True,
}
_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_COMMON: dict[str, str] = {
    "401": "Missing, malformed, unknown or revoked API key",
    "403": "The key's role may not do this",
    "422": "Invalid request: each problem says what and where",
}
_WITH_BODY: dict[str, str] = {
    "400": "Malformed request (body or header)",
    "413": "Request body, or the event it would record, over the limit",
}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Every error response as problem+json, and the errors every /v1 route can give."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if path.startswith("/v1"):
                for code, text in _COMMON.items():
                    responses.setdefault(code, {"description": text})
                if "{" in path:
                    responses.setdefault("404", {"description": "No such resource"})
                if method in ("post", "put", "patch"):
                    for code, text in _WITH_BODY.items():
                        responses.setdefault(code, {"description": text})
            for code, response in responses.items():
                if code[0] in "45":
                    response["content"] = dict(_PROBLEM_CONTENT)
    components = schema["components"]["schemas"]
    text = json.dumps(schema["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in components and f"/{unused}" not in text:
            del components[unused]
    return schema
