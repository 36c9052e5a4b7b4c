"""Outbound webhooks, the pure part: which log events and flags become which notifications,
which subscriptions want them, the envelope a receiver gets, and when to try again.

Nothing here sends, reads a clock or draws a random number: the caller passes `now`, the
jitter and the deal as it stood, so every decision is a plain function of its inputs.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from app.domain import events as e
from app.domain.errors import InvalidRequest
from app.domain.flags import KINDS as FLAG_KINDS
from app.domain.pipeline import DEFAULT_PIPELINE, NURTURE
from app.domain.state import DealState

EventType = Literal[
    "deal.stage_entered",
    "deal.won",
    "deal.disqualified",
    "deal.regressed",
    "flag.raised",
    "evidence.retracted",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
ANY = "*"
PING = "webhook.test"
SEVERITIES = ("warning", "critical")
# Which filter narrows which notification: a filter on an attribute a type does not have
# leaves that type alone (so one subscription can take late-stage entries and critical flags).
FILTER_KEYS = ("stage", "severity", "kind", "owner")

# The namespace of webhook-ids: one id per (endpoint, event), the same on every attempt.
_MESSAGE_NAMESPACE = uuid.UUID("6f1c2a0e-7d4b-5e8a-9c3f-2b1d0e4a5c6b")


@dataclass(frozen=True)
class Subscription:
    endpoint_id: uuid.UUID
    event_types: tuple[str, ...]
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Notification:
    """Something a subscriber may hear about: a log event or a raised flag, before the deal's
    details are attached."""

    type: str
    deal_id: uuid.UUID
    key: str
    """What makes it unique in the log (the event's position, or the flag's identity)."""
    at: datetime
    details: Mapping[str, Any]
    position: int | None = None
    stage: str | None = None
    """The stage entered (deal.stage_entered)."""
    severity: str | None = None
    kind: str | None = None


def _stage_entered(entered: str, how: str, **more: Any) -> tuple[str, str | None, dict[str, Any]]:
    return "deal.stage_entered", entered, {**more, "to_stage": entered, "how": how}


def notifications_of(
    event: e.DomainEvent, *, deal_id: uuid.UUID, position: int, recorded_at: datetime
) -> list[Notification]:
    """What one log event announces (most events: nothing)."""
    found: list[tuple[str, str | None, dict[str, Any]]] = []
    match event:
        case e.DealOpened():
            found.append(_stage_entered(event.stage, "opened"))
        case e.StageAdvanced():
            found.append(
                _stage_entered(
                    event.to_stage,
                    "advanced",
                    from_stage=event.from_stage,
                    override=event.override is not None,
                )
            )
        case e.StageRegressed():
            details = {
                "from_stage": event.from_stage,
                "to_stage": event.to_stage,
                "trigger": event.trigger,
            }
            found.append(_stage_entered(event.to_stage, "regressed", **details))
            found.append(("deal.regressed", None, details))
        case e.DealReactivated():
            found.append(_stage_entered(event.to_stage, "reactivated"))
        case e.DealNurtured():
            found.append(_stage_entered(NURTURE, "nurtured", from_stage=event.from_stage))
        case e.DealWon():
            found.append(
                (
                    "deal.won",
                    None,
                    {"from_stage": event.from_stage, "override": bool(event.override)},
                )
            )
        case e.DealDisqualified():
            found.append(
                (
                    "deal.disqualified",
                    None,
                    {"from_stage": event.from_stage, "reason": event.reason},
                )
            )
        case e.EvidenceRetracted():
            found.append(
                (
                    "evidence.retracted",
                    None,
                    {"evidence_id": str(event.evidence_id), "reason": event.reason},
                )
            )
        case _:
            pass
    return [
        Notification(
            type=kind,
            deal_id=deal_id,
            key=f"event:{position}:{kind}",
            at=recorded_at,
            details=details,
            position=position,
            stage=stage,
        )
        for kind, stage, details in found
    ]


def flag_notification(
    *,
    deal_id: uuid.UUID,
    kind: str,
    severity: str,
    raised_at: datetime,
    numbers: Mapping[str, Any],
) -> Notification:
    """A flag raised (or raised again at a higher severity) on a deal."""
    return Notification(
        type="flag.raised",
        deal_id=deal_id,
        key=f"flag:{deal_id}:{kind}:{raised_at.isoformat()}:{severity}",
        at=raised_at,
        details={"kind": kind, "severity": severity, "numbers": dict(numbers)},
        severity=severity,
        kind=kind,
    )


def wants_type(subscription: Subscription, event_type: str) -> bool:
    return ANY in subscription.event_types or event_type in subscription.event_types


def matches(subscription: Subscription, notification: Notification, owner: str | None) -> bool:
    """Does the subscription want this notification (about a deal with this owner)?"""
    if not wants_type(subscription, notification.type):
        return False
    attributes = {
        "stage": notification.stage,
        "severity": notification.severity,
        "kind": notification.kind,
        "owner": owner,
    }
    for key, allowed in subscription.filters.items():
        value = attributes.get(key)
        if value is None and key != "owner":
            continue  # this type has no such attribute: the filter is about other types
        if value not in allowed:
            return False
    return True


def message_id(endpoint_id: uuid.UUID, notification_key: str) -> str:
    """The webhook-id: stable for one notification to one endpoint, across every attempt
    and replay, so a receiver can drop what it already has."""
    return "msg_" + uuid.uuid5(_MESSAGE_NAMESPACE, f"{endpoint_id}|{notification_key}").hex


def _amount(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def deal_summary(state: DealState) -> dict[str, Any]:
    """The deal as a receiver sees it: no evidence, stakeholders or internal fields."""
    return {
        "id": str(state.deal_id),
        "name": state.name,
        "owner": state.owner,
        "stage": state.stage,
        "status": state.status,
        "amount": _amount(state.amount),
        "currency": state.currency,
        "close_date": state.close_date.isoformat() if state.close_date else None,
        "pipeline": state.pipeline_key,
    }


def envelope(notification: Notification, deal: Mapping[str, Any], link_base: str) -> dict[str, Any]:
    """The typed body a receiver gets: `type`, `timestamp` and `data` (never a stored row);
    `deal` is `deal_summary` of the deal as it stood, with a link to it."""
    link = f"{link_base.rstrip('/')}/v1/deals/{notification.deal_id}"
    return {
        "type": notification.type,
        "timestamp": notification.at.isoformat(),
        "data": {
            "deal": {**deal, "link": link},
            "position": notification.position,
            **notification.details,
        },
    }


def ping_envelope(endpoint_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    return {
        "type": PING,
        "timestamp": now.isoformat(),
        "data": {"endpoint_id": str(endpoint_id), "message": "a test from dealledger"},
    }


# ---- subscriptions: what may be asked for ----


def known_stages() -> tuple[str, ...]:
    # The built-in pipeline's stages: a filter on a stage of an admin's own pipeline is not
    # accepted yet (the subscription rules are pure; the versions live in the log).
    return (*sorted(DEFAULT_PIPELINE.stage_keys), NURTURE)


def check_event_types(event_types: Sequence[str]) -> tuple[str, ...]:
    if not event_types:
        raise InvalidRequest("event_types must name at least one event type (or '*')")
    allowed = (*EVENT_TYPES, ANY)
    unknown = [t for t in event_types if t not in allowed]
    if unknown:
        raise InvalidRequest(
            f"unknown event type(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}",
            allowed=list(allowed),
        )
    return tuple(dict.fromkeys(event_types))


def check_filters(filters: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Filters as stored; unknown keys or values are a 422 naming what is allowed."""
    allowed_values: dict[str, tuple[str, ...] | None] = {
        "stage": known_stages(),
        "severity": SEVERITIES,
        "kind": FLAG_KINDS,
        "owner": None,
    }
    checked: dict[str, tuple[str, ...]] = {}
    for key, values in filters.items():
        if key not in allowed_values:
            raise InvalidRequest(
                f"unknown filter {key!r}; filters are: {', '.join(FILTER_KEYS)}",
                allowed=list(FILTER_KEYS),
            )
        if not values:
            raise InvalidRequest(f"filter {key!r} must list at least one value")
        allowed = allowed_values[key]
        if allowed is not None:
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise InvalidRequest(
                    f"filter {key!r}: {', '.join(unknown)} is not one of: {', '.join(allowed)}",
                    allowed=list(allowed),
                )
        checked[key] = tuple(dict.fromkeys(values))
    return checked


LATE_STAGES: tuple[str, ...] = DEFAULT_PIPELINE.late_stages
"""The default pipeline's late stages (negotiation, closing): where a manager wants to know."""


def preset(name: Literal["manager"]) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """A ready-made subscription: event types and filters."""
    match name:
        case "manager":
            return ("deal.stage_entered", "flag.raised"), {
                "stage": LATE_STAGES,
                "severity": ("critical",),
            }
