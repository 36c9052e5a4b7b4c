"""Signing in to the pages: the cookie's flags, who may sign in, and that the key itself never
travels in a URL or a page, and that revoking a key ends its sessions."""

from __future__ import annotations

import httpx

from app.settings import Settings
from tests.keys import KEYS
from tests.support import app_client


async def sign_in(http: httpx.AsyncClient, role: str) -> httpx.Response:
    return await http.post("/ui/login", data={"key": KEYS[role].token})


async def test_a_session_cookie_is_http_only_strict_and_path_bound(
    anonymous: httpx.AsyncClient,
) -> None:
    assert (await anonymous.get("/ui")).headers["location"] == "/ui/login"
    response = await sign_in(anonymous, "manager")
    assert response.status_code == 303 and response.headers["location"] == "/ui"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # served over http here: a Secure cookie would be dropped
    assert KEYS["manager"].token not in cookie
    board = await anonymous.get("/ui")
    assert board.status_code == 200 and "maria.manager" in board.text
    assert KEYS["manager"].token not in board.text


async def test_over_https_the_cookie_is_secure(app: object) -> None:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="https://ledger.test") as http:
        cookie = (await sign_in(http, "rep")).headers["set-cookie"]
    assert "Secure" in cookie


async def test_an_ingest_key_or_a_wrong_one_cannot_sign_in(anonymous: httpx.AsyncClient) -> None:
    ingest = await sign_in(anonymous, "ingest")
    assert ingest.status_code == 403 and "ingest key cannot sign in" in ingest.text
    assert "set-cookie" not in ingest.headers
    wrong = await anonymous.post("/ui/login", data={"key": "dl_not_a_key"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    assert "dl_not_a_key" not in wrong.text  # what was typed is not echoed back


async def test_revoking_the_key_ends_its_sessions_and_signing_out_ends_one(
    anonymous: httpx.AsyncClient,
) -> None:
    await sign_in(anonymous, "rep")
    assert (await anonymous.get("/ui")).status_code == 200
    revoked = await anonymous.post(
        f"/v1/keys/{KEYS['rep'].key_id}/revoke", headers=KEYS["admin"].headers
    )
    assert revoked.status_code == 200, revoked.text
    assert (await anonymous.get("/ui")).headers["location"] == "/ui/login"

    await sign_in(anonymous, "manager")
    assert (await anonymous.get("/ui")).status_code == 200
    out = await anonymous.post("/ui/logout")
    assert out.headers["location"] == "/ui/login"
    assert (await anonymous.get("/ui")).headers["location"] == "/ui/login"


async def test_a_rep_reads_the_board_but_not_the_teams_flags(anonymous: httpx.AsyncClient) -> None:
    await sign_in(anonymous, "rep")
    assert (await anonymous.get("/ui")).status_code == 200
    flags = await anonymous.get("/ui/flags")
    assert flags.status_code == 403 and "for managers and auditors" in flags.text


async def test_serve_dev_reads_the_pages_without_signing_in(database_url: str) -> None:
    async with app_client(database_url, Settings(dev_mode=True)) as http:
        http.headers.pop("Authorization")
        board = await http.get("/ui")
    assert board.status_code == 200 and "(admin)" in board.text
