"""One error tree: each error carries what a client needs; one handler maps it to HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DomainError(Exception):
    status = 422
    title = "Command rejected"
    slug = "rejected"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


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


class InvalidCommand(DomainError):
    title = "Command is not valid"
    slug = "invalid-command"
