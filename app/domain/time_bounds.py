"""The times and dates the service accepts: years 1970 to 8999 as written, with an offset.

Outside them PostgreSQL may store ±infinity or Python may overflow converting to UTC. The
year is judged as written (not in UTC), so the API document can state the rule exactly (a
pattern on the text); a CHECK constraint on the events table holds the same bounds, a day
wider for the offsets, as a last line.
"""

from __future__ import annotations

from datetime import date, datetime

FIRST_YEAR = 1970
LAST_YEAR = 8999
RANGE = f"in the years {FIRST_YEAR} to {LAST_YEAR}"
YEAR_PATTERN = r"^(19[7-9][0-9]|[2-8][0-9]{3})-"
"""The same rule on ISO 8601 text, for the API document."""


def time_problem(moment: datetime) -> str | None:
    """Why `moment` is not a time the service takes, or None."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return "must carry a UTC offset, e.g. 2026-11-20T10:00:00Z"
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        return f"must lie {RANGE}"
    return None


def bounded_time(moment: datetime) -> datetime:
    """`moment` as given, or ValueError saying why it is not taken (a pydantic validator)."""
    if (problem := time_problem(moment)) is not None:
        raise ValueError(problem)
    return moment


def bounded_date(day: date) -> date:
    """`day` as given if it lies in the years 1970 to 8999, else ValueError."""
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise ValueError(f"must lie {RANGE}")
    return day
