"""One error tree: every error a client can cause, with its HTTP status and problem type.

Each error carries what a client needs; one handler (app.api.problems) maps any of them to
an RFC 9457 problem+json response, so routes contain no try/except ladders.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar


class DomainError(Exception):
    status = 422
    title = "Command rejected"
    slug = "rejected"
    headers: ClassVar[dict[str, str]] = {}
    """HTTP headers the problem response carries (e.g. Retry-After)."""

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 problem document a client gets for this error."""
        return {
            "type": f"/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extensions,
        }


class DealNotFound(DomainError):
    status = 404
    title = "Deal not found"
    slug = "deal-not-found"


class NotFound(DomainError):
    status = 404
    title = "Not found"
    slug = "not-found"


class DealAlreadyExists(DomainError):
    status = 409
    title = "Deal already exists"
    slug = "deal-exists"


class CriteriaNotMet(DomainError):
    title = "Exit criteria not met"
    slug = "criteria-not-met"

    def __init__(
        self, to_stage: str, unmet_criteria: Sequence[str], missing_required_fields: Sequence[str]
    ) -> None:
        parts = []
        if unmet_criteria:
            parts.append("unmet exit criteria: " + ", ".join(unmet_criteria))
        if missing_required_fields:
            parts.append("missing required fields: " + ", ".join(missing_required_fields))
        super().__init__(
            f"cannot move to {to_stage}: " + "; ".join(parts),
            to_stage=to_stage,
            unmet_criteria=list(unmet_criteria),
            missing_required_fields=list(missing_required_fields),
        )


class DealClosed(DomainError):
    status = 409
    title = "Deal is closed"
    slug = "deal-closed"


class InvalidTransition(DomainError):
    status = 409
    title = "Transition not allowed"
    slug = "invalid-transition"


class UnknownValue(DomainError):
    title = "Unknown value"
    slug = "unknown-value"

    def __init__(self, field: str, value: object, allowed: Sequence[str]) -> None:
        super().__init__(
            f"{field} {value!r} is not one of: {', '.join(allowed)}",
            field=field,
            value=value,
            allowed=list(allowed),
        )


class OccurredInFuture(DomainError):
    title = "Time lies in the future"
    slug = "occurred-in-future"

    def __init__(self, field: str, moment: datetime, latest: datetime) -> None:
        super().__init__(
            f"{field} {moment.isoformat()} lies in the future: at most {latest.isoformat()}"
            " (now plus the allowed clock skew)",
            field=field,
            value=moment.isoformat(),
            latest_allowed=latest.isoformat(),
        )


class OverrideNotAllowed(DomainError):
    status = 403
    title = "Override not allowed"
    slug = "override-not-allowed"


class InvalidRequest(DomainError):
    title = "Request is not valid"
    slug = "validation"


class BadRequest(DomainError):
    status = 400
    title = "Bad Request"
    slug = "bad-request"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class NotCaughtUp(DomainError):
    """A read with min_position found the read models behind it after the allowed wait."""

    status = 503
    title = "Read models behind"
    slug = "not-caught-up"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class UnsupportedMediaType(DomainError):
    status = 415
    title = "Unsupported Media Type"
    slug = "unsupported-media-type"


class InvalidCommand(DomainError):
    title = "Command is not valid"
    slug = "invalid-command"


class PreconditionFailed(DomainError):
    status = 412
    title = "Precondition failed"
    slug = "precondition-failed"


class ConcurrentModification(DomainError):
    status = 409
    title = "Concurrent modification"
    slug = "concurrent-modification"


class InvalidCloudEvent(DomainError):
    title = "Invalid CloudEvent"
    slug = "invalid-cloudevent"


class UnknownEventType(DomainError):
    title = "Unknown event type"
    slug = "unknown-event-type"


class InvalidEventData(DomainError):
    """Event content PostgreSQL cannot store as given (e.g. NUL in text)."""

    title = "Request is not valid"
    slug = "validation"


class EventTooLarge(DomainError):
    status = 413
    title = "Event too large"
    slug = "event-too-large"

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            f"{what} is {size:,} bytes encoded, over the limit of {limit:,} bytes for one event"
            " (DEALLEDGER_MAX_EVENT_BYTES)",
            size=size,
            limit=limit,
        )


class DatabaseUnavailable(DomainError):
    """The database cannot be reached (restarting, stopped, network): retry shortly."""

    status = 503
    title = "Service unavailable"
    slug = "database-unavailable"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class InvalidPipeline(DomainError):
    title = "Invalid pipeline"
    slug = "invalid-pipeline"

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("the pipeline is not valid: " + "; ".join(problems), problems=problems)


class PipelineNotFound(DomainError):
    status = 404
    title = "Pipeline not found"
    slug = "pipeline-not-found"


class PipelineExists(DomainError):
    status = 409
    title = "Pipeline already exists"
    slug = "pipeline-exists"


class PipelineVersionConflict(DomainError):
    status = 409
    title = "Pipeline version conflict"
    slug = "pipeline-version-conflict"
