"""Calendar periods targets and forecasts are kept for: a quarter ("2026-Q3") or a month
("2026-11"), in UTC."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from app.domain.errors import InvalidRequest
from app.domain.time_bounds import FIRST_YEAR, LAST_YEAR, RANGE

_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, order=True)
class Period:
    first_day: date
    next_first_day: date
    """The day after the period ends."""
    label: str

    @classmethod
    def parse(cls, text: str) -> Period:
        """A period from its label; InvalidRequest if it is neither a quarter nor a month."""
        match = _QUARTER.match(text) or _MONTH.match(text)
        if match and not FIRST_YEAR <= int(match[1]) <= LAST_YEAR:
            raise InvalidRequest(f"period {text!r} must lie {RANGE}", field="period")
        if match := _QUARTER.match(text):
            return cls.quarter(int(match[1]), int(match[2]))
        if match := _MONTH.match(text):
            return cls.month(int(match[1]), int(match[2]))
        raise InvalidRequest(
            f"period {text!r} is neither a quarter (2026-Q3) nor a month (2026-11)",
            field="period",
        )

    @classmethod
    def quarter(cls, year: int, quarter: int) -> Period:
        first = date(year, 3 * quarter - 2, 1)
        after = date(year + 1, 1, 1) if quarter == 4 else date(year, 3 * quarter + 1, 1)
        return cls(first, after, f"{year}-Q{quarter}")

    @classmethod
    def month(cls, year: int, month: int) -> Period:
        after = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
        return cls(date(year, month, 1), after, f"{year}-{month:02d}")

    @classmethod
    def quarter_of(cls, day: date) -> Period:
        return cls.quarter(day.year, (day.month - 1) // 3 + 1)

    @property
    def is_quarter(self) -> bool:
        return "Q" in self.label

    def previous(self) -> Period:
        """The period of the same kind just before this one."""
        day = date.fromordinal(self.first_day.toordinal() - 1)
        if self.is_quarter:
            return Period.quarter_of(day)
        return Period.month(day.year, day.month)

    @property
    def months(self) -> tuple[str, ...]:
        """Its months as YYYY-MM."""
        found = []
        year, month = self.first_day.year, self.first_day.month
        while date(year, month, 1) < self.next_first_day:
            found.append(f"{year}-{month:02d}")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return tuple(found)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, time.min, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the period."""
        return datetime.combine(self.next_first_day, time.min, tzinfo=UTC)

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.first_day <= day < self.next_first_day

    def __str__(self) -> str:
        return self.label
