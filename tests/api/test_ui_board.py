"""The board over HTTP: a column draws its longest-waiting deals and counts every one, with
their amounts by currency; the owner and flag filters; and the board of today read from the
read models equals the one replayed from the log (as of the end of today)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import httpx

from app.api.ui.routes import CARDS_PER_COLUMN
from tests.api.conftest import Deals
from tests.keys import KEYS
from tests.support import caught_up


def column(page: str, stage: str) -> dict[str, object]:
    """What one column shows: its count, its card names in order, its totals, how many more."""
    section = page.split(f'data-stage="{stage}"', 1)[1].split("</section>", 1)[0]
    totals = section.split('<p class="totals">', 1)[1].split('<span class="weighted">', 1)[0]
    more = re.search(r"and (\d+) more", section)
    return {
        "count": int(re.search(r'data-count="(\d+)"', section).group(1)),  # type: ignore[union-attr]
        "names": re.findall(r'class="name" href="/ui/deals/[0-9a-f-]+">([^<]*)</a>', section),
        "totals": re.findall(r"<span>([^<]*)</span>", totals),
        "more": int(more.group(1)) if more else 0,
    }


async def test_a_full_column_draws_the_longest_waiting_and_counts_the_rest(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, deals: Deals, pg: asyncpg.Connection
) -> None:
    opened = []
    amounts: dict[str, Decimal] = {"EUR": Decimal(0), "USD": Decimal(0)}
    for i in range(CARDS_PER_COLUMN + 3):  # opened one after another: the first waits longest
        currency = "EUR" if i % 2 else "USD"
        fields = {"amount": str(1000 + i), "currency": currency} if i != 7 else {}
        owner = "ann.rep" if i % 3 == 0 else "rick.rep"
        opened.append(await deals.open(name=f"Deal {i:02}", owner=owner, **fields))
        if i != 7:
            amounts[currency] += 1000 + i
    for deal in (opened[6], opened[5]):  # the stage's next step done, nothing next: a flag
        done = await deals.command(deal["id"], "next-step/complete")
        assert done.status_code == 200, done.text
    await caught_up(pg)
    await anonymous.post("/ui/login", data={"key": KEYS["manager"].token})
    names = [f"Deal {i:02}" for i in range(CARDS_PER_COLUMN + 3)]

    board = await anonymous.get("/ui")
    assert board.status_code == 200
    assert column(board.text, "discovery") == {
        "count": CARDS_PER_COLUMN + 3,
        "names": names[:CARDS_PER_COLUMN],
        "totals": [f"{amounts['EUR']:,.0f} EUR", f"{amounts['USD']:,.0f} USD"],
        "more": 3,
    }
    assert column(board.text, "qualification")["count"] == 0

    # One owner's deals; then those with no next step (two completed theirs).
    ann = [name for i, name in enumerate(names) if i % 3 == 0]
    theirs = column((await anonymous.get("/ui", params={"owner": "ann.rep"})).text, "discovery")
    assert theirs["count"] == len(ann) and theirs["names"] == ann and theirs["more"] == 0
    flagged = column(
        (await anonymous.get("/ui", params={"flag": "no_next_step"})).text, "discovery"
    )
    assert flagged == {
        "count": 2,
        "names": ["Deal 05", "Deal 06"],
        "totals": ["1,005 EUR", "1,006 USD"],
        "more": 0,
    }

    # Read from the read models now, or replayed from the log as of the end of today: the same.
    today = datetime.now(UTC).date().isoformat()  # every deal and flag stood by its end
    for params in ({}, {"owner": "ann.rep"}, {"flag": "no_next_step"}):
        now = column((await anonymous.get("/ui", params=params)).text, "discovery")
        replayed = await anonymous.get("/ui", params={**params, "as_of": today})
        assert "as it stood on" in replayed.text
        assert column(replayed.text, "discovery") == now, params
