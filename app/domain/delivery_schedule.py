"""When a webhook is tried again, and what becomes of it and its endpoint after an attempt.
Pure: the caller passes the answer, `now` and the jitter."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

# Standard Webhooks' recommended schedule: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.1
"""Each wait is stretched or shrunk by up to this fraction, so retries do not stampede."""


Outcome = Literal["delivered", "retry", "gone"]


def parse_schedule(text: str) -> tuple[float, ...]:
    """`DEALLEDGER_WEBHOOKS_RETRY_SCHEDULE`: comma-separated seconds, first one usually 0."""
    try:
        schedule = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise ValueError(f"retry schedule {text!r}: comma-separated seconds expected") from error
    if not schedule or any(not math.isfinite(s) or s < 0 for s in schedule):
        raise ValueError(f"retry schedule {text!r}: one or more seconds >= 0 expected")
    return schedule


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a receiver asked us to wait (delta-seconds or an HTTP date), if any."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - now).total_seconds(), 0.0)


def outcome_of(status_code: int | None) -> Outcome:
    """2xx delivered; 410 Gone disables the endpoint; anything else (no answer, 3xx
    redirects we do not follow, 4xx, 5xx) is tried again."""
    if status_code is not None and 200 <= status_code < 300:
        return "delivered"
    if status_code == 410:
        return "gone"
    return "retry"


def next_attempt_delay(
    attempts_made: int,
    schedule: Sequence[float],
    *,
    jitter: float,
    retry_after: float | None = None,
) -> float | None:
    """Seconds until the next attempt after `attempts_made` attempts failed, or None when
    the schedule is spent. `jitter` in [-1, 1] scales the JITTER fraction; a receiver's
    Retry-After is honoured (never earlier), up to the schedule's longest wait."""
    if attempts_made >= len(schedule):
        return None
    delay = schedule[attempts_made] * (1 + JITTER * max(-1.0, min(1.0, jitter)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, max(schedule)))
    return delay


def disable_reason(failing_since: datetime | None, now: datetime, after: timedelta) -> str | None:
    """Why an endpoint that has failed every attempt since `failing_since` is disabled now,
    or None while it has not failed for that long."""
    if failing_since is None or now - failing_since < after:
        return None
    days = (now - failing_since) / timedelta(days=1)
    return (
        f"every delivery attempt failed since {failing_since.isoformat()}"
        f" ({days:.1f} days); enable it again once the receiver works"
    )


@dataclass(frozen=True)
class AttemptResult:
    status: Literal["pending", "delivered", "failed"]
    outcome: Literal["delivered", "retrying", "failed", "gone"]
    retry_in: float | None = None
    disable_reason: str | None = None


def after_attempt(
    status_code: int | None,
    *,
    attempts_made: int,
    schedule: Sequence[float],
    jitter: float,
    retry_after: float | None,
    failing_since: datetime | None,
    now: datetime,
    disable_after: timedelta,
) -> AttemptResult:
    """What becomes of a delivery after an attempt answered `status_code` (None: no answer)."""
    match outcome_of(status_code):
        case "delivered":
            return AttemptResult("delivered", "delivered")
        case "gone":
            return AttemptResult("failed", "gone", disable_reason="the receiver answered 410 Gone")
        case _:
            streak = disable_reason(failing_since, now, disable_after)
            delay = next_attempt_delay(
                attempts_made, schedule, jitter=jitter, retry_after=retry_after
            )
            if delay is None:
                return AttemptResult("failed", "failed", disable_reason=streak)
            return AttemptResult("pending", "retrying", retry_in=delay, disable_reason=streak)
