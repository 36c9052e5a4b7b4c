"""The pure part of webhooks: what an event announces, who wants it, the envelope, when to
try again, and which addresses a webhook may never reach."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain import events as e
from app.domain.delivery_schedule import (
    DEFAULT_SCHEDULE,
    JITTER,
    AttemptResult,
    after_attempt,
    next_attempt_delay,
    outcome_of,
    parse_retry_after,
    parse_schedule,
)
from app.domain.destinations import (
    DestinationRefused,
    address_class,
    parse_destination,
    refusal,
)
from app.domain.errors import InvalidRequest
from app.domain.flags import KINDS as FLAG_KINDS
from app.domain.state import DealState
from app.domain.webhooks import (
    EVENT_TYPES,
    LATE_STAGES,
    SEVERITIES,
    Notification,
    Subscription,
    check_event_types,
    check_filters,
    deal_summary,
    envelope,
    flag_notification,
    known_stages,
    matches,
    message_id,
    notifications_of,
    preset,
    wants_type,
)

DEAL = uuid.UUID(int=7)
AT = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def announced(event: e.DomainEvent) -> list[tuple[str, str | None]]:
    found = notifications_of(event, deal_id=DEAL, position=42, recorded_at=AT)
    return [(n.type, n.stage) for n in found]


def test_stage_changes_announce_the_stage_entered() -> None:
    advanced = e.StageAdvanced(
        from_stage="proposal", to_stage="negotiation", criteria={}, pipeline_version=1
    )
    assert announced(advanced) == [("deal.stage_entered", "negotiation")]
    regressed = e.StageRegressed(
        from_stage="closing", to_stage="negotiation", trigger="timeline_extended",
        pipeline_version=1,
    )  # fmt: skip
    assert announced(regressed) == [
        ("deal.stage_entered", "negotiation"),
        ("deal.regressed", None),
    ]
    won = e.DealWon(from_stage="closing", criteria={}, pipeline_version=1)
    assert announced(won) == [("deal.won", None)]
    assert announced(e.OwnerAssigned(owner="olga")) == []


def test_notifications_of_one_event_have_distinct_stable_keys() -> None:
    regressed = e.StageRegressed(
        from_stage="closing", to_stage="proposal", trigger="timeline_extended", pipeline_version=1
    )
    first = notifications_of(regressed, deal_id=DEAL, position=42, recorded_at=AT)
    again = notifications_of(regressed, deal_id=DEAL, position=42, recorded_at=AT)
    assert [n.key for n in first] == [n.key for n in again]
    assert len({n.key for n in first}) == 2


def sub(*types: str, **filters: tuple[str, ...]) -> Subscription:
    return Subscription(uuid.uuid4(), types, filters)


def stage_entered(stage: str) -> list[Notification]:
    event = e.StageAdvanced(from_stage="x", to_stage=stage, criteria={}, pipeline_version=1)
    return notifications_of(event, deal_id=DEAL, position=1, recorded_at=AT)


def flag(severity: str, kind: str = "ghosting") -> Notification:
    return flag_notification(
        deal_id=DEAL, kind=kind, severity=severity, raised_at=AT, numbers={"days": 3}
    )


def test_filters_narrow_only_the_types_they_are_about() -> None:
    manager = Subscription(uuid.uuid4(), *preset("manager"))
    (late,) = stage_entered("negotiation")
    (early,) = stage_entered("discovery")
    assert matches(manager, late, "ann")
    assert not matches(manager, early, "ann")
    assert matches(manager, flag("critical"), "ann")  # the stage filter leaves flags alone
    assert not matches(manager, flag("warning"), "ann")
    anything = sub("*")
    assert matches(anything, early, "ann") and matches(anything, flag("warning"), None)
    anns = sub("*", owner=("ann",))
    assert matches(anns, early, "ann") and not matches(anns, early, "bob")
    assert not matches(anns, flag("critical"), None)
    assert not matches(sub("deal.won"), late, "ann")


def test_the_manager_preset_is_the_default_pipelines_late_stages() -> None:
    assert LATE_STAGES == ("negotiation", "closing")


@given(st.uuids(), st.uuids(), st.text(max_size=30), st.text(max_size=30))
def test_webhook_ids_are_stable_per_endpoint_and_notification(
    one: uuid.UUID, other: uuid.UUID, key: str, other_key: str
) -> None:
    assert message_id(one, key) == message_id(one, key)
    assert message_id(one, key).startswith("msg_")
    if (one, key) != (other, other_key):
        assert message_id(one, key) != message_id(other, other_key)


def test_the_envelope_is_typed_and_carries_no_stored_row() -> None:
    state = DealState(
        deal_id=DEAL, version=3, name="Acme", owner="ann", stage="proposal", status="open",
        amount=Decimal("48000.50"), currency="EUR",
    )  # fmt: skip
    (n,) = stage_entered("proposal")
    body = envelope(n, deal_summary(state), "https://ledger.example.com/")
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "deal.stage_entered" and body["timestamp"] == AT.isoformat()
    deal = body["data"]["deal"]
    assert deal["amount"] == "48000.50" and deal["owner"] == "ann"
    assert deal["link"] == f"https://ledger.example.com/v1/deals/{DEAL}"
    assert body["data"]["position"] == 1 and body["data"]["to_stage"] == "proposal"
    assert "evidence" not in deal and "hash" not in body["data"]


def test_what_may_be_subscribed_to_is_checked() -> None:
    assert check_event_types(["deal.won", "deal.won", "*"]) == ("deal.won", "*")
    with pytest.raises(InvalidRequest):
        check_event_types([])
    with pytest.raises(InvalidRequest):
        check_event_types(["deal.exploded"])
    assert check_filters({"stage": ["closing"], "owner": ["anyone"]}) == {
        "stage": ("closing",),
        "owner": ("anyone",),
    }
    bad_filters: list[dict[str, list[str]]] = [
        {"stage": ["attic"]},
        {"severity": ["mild"]},
        {"colour": ["red"]},
        {"kind": []},
    ]
    for bad in bad_filters:
        with pytest.raises(InvalidRequest):
            check_filters(bad)


# ---- retries ----


@given(
    attempts=st.integers(min_value=0, max_value=20),
    jitter=st.floats(min_value=-1, max_value=1),
    retry_after=st.none() | st.floats(min_value=0, max_value=10**6),
)
def test_retries_follow_the_schedule_within_the_jitter(
    attempts: int, jitter: float, retry_after: float | None
) -> None:
    delay = next_attempt_delay(attempts, DEFAULT_SCHEDULE, jitter=jitter, retry_after=retry_after)
    if attempts >= len(DEFAULT_SCHEDULE):
        assert delay is None
        return
    assert delay is not None
    planned = DEFAULT_SCHEDULE[attempts]
    assert delay >= planned * (1 - JITTER) - 1e-9
    assert delay <= max(planned * (1 + JITTER), max(DEFAULT_SCHEDULE)) + 1e-9
    if retry_after is not None:
        assert delay >= min(retry_after, max(DEFAULT_SCHEDULE)) - 1e-9  # never earlier


def test_the_standard_schedule_is_eight_attempts() -> None:
    assert DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    waits = [next_attempt_delay(n, DEFAULT_SCHEDULE, jitter=0) for n in range(1, 9)]
    assert waits == [5, 300, 1800, 7200, 18000, 36000, 36000, None]


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(200, "delivered"), (204, "delivered"), (299, "delivered"), (301, "retry"),
     (400, "retry"), (410, "gone"), (429, "retry"), (500, "retry"), (None, "retry")],
)  # fmt: skip
def test_outcomes_by_status(code: int | None, outcome: str) -> None:
    assert outcome_of(code) == outcome


def attempt(code: int | None, made: int, failing_days: float | None = None) -> AttemptResult:
    since = None if failing_days is None else AT - timedelta(days=failing_days)
    return after_attempt(
        code,
        attempts_made=made,
        schedule=(0, 5),
        jitter=0.0,
        retry_after=None,
        failing_since=since,
        now=AT,
        disable_after=timedelta(days=5),
    )


def test_after_an_attempt() -> None:
    assert attempt(200, 1).status == "delivered"
    retry = attempt(500, 1)
    assert (retry.status, retry.retry_in, retry.disable_reason) == ("pending", 5, None)
    spent = attempt(500, 2)
    assert (spent.status, spent.outcome) == ("failed", "failed")
    gone = attempt(410, 1)
    assert gone.status == "failed" and gone.disable_reason is not None
    long_failing = attempt(500, 1, failing_days=6)
    assert long_failing.disable_reason is not None and "6.0 days" in long_failing.disable_reason
    assert attempt(500, 1, failing_days=4).disable_reason is None


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("120", AT) == 120
    assert parse_retry_after("Fri, 20 Nov 2026 10:01:00 GMT", AT) == 60
    assert parse_retry_after("soon", AT) is None and parse_retry_after(None, AT) is None


def test_a_schedule_from_the_environment() -> None:
    assert parse_schedule("0, 0.5,2") == (0, 0.5, 2)
    for bad in ("", "a,b", "-1", "nan"):
        with pytest.raises(ValueError):
            parse_schedule(bad)


# ---- destinations ----


@pytest.mark.parametrize(
    ("address", "kind"),
    [("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.0.0.1", "private"),
     ("172.16.5.4", "private"), ("192.168.1.1", "private"), ("169.254.169.254", "link-local"),
     ("fe80::1", "link-local"), ("fd00::1", "private"), ("0.0.0.0", "unspecified"),
     ("::ffff:10.0.0.1", "private"), ("100.64.0.1", "not public"), ("224.0.0.1", "multicast"),
     ("8.8.8.8", None), ("2606:4700:4700::1111", None)],
)  # fmt: skip
def test_address_classes(address: str, kind: str | None) -> None:
    assert address_class(ipaddress.ip_address(address)) == kind


@given(st.ip_addresses())
def test_an_address_is_refused_exactly_when_it_is_not_global(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    mapped = getattr(address, "ipv4_mapped", None)
    plain = mapped or address
    public = plain.is_global and not plain.is_multicast and not plain.is_reserved
    assert (refusal("h.example", [address], ()) is None) == public
    assert refusal("h.example", [address], (str(address),)) is None  # listed: allowed


def test_one_private_answer_among_public_ones_is_enough_to_refuse() -> None:
    public, private = ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.1")
    assert refusal("h.example", [public, private], ()) is not None
    assert refusal("h.example", [public, private], ("h.example",)) is None
    assert refusal("h.example", [], ()) == "h.example does not resolve"


def test_urls_must_be_https_without_credentials() -> None:
    assert parse_destination("https://Hooks.Example.com/x", allow_http=False).host == (
        "hooks.example.com"
    )
    assert parse_destination("http://h.example:8080/x", allow_http=True).port == 8080
    for bad, allow_http in (
        ("http://h.example/x", False),
        ("ftp://h.example/x", True),
        ("https://u:p@h.example/x", False),
        ("https:///x", False),
        ("https://h.example:99999/x", False),
    ):
        with pytest.raises(DestinationRefused):
            parse_destination(bad, allow_http=allow_http)


@st.composite
def notifications(draw: st.DrawFn) -> tuple[Notification, str | None]:
    kind = draw(st.sampled_from(EVENT_TYPES))
    owner = draw(st.none() | st.sampled_from(["ann", "bob"]))
    if kind == "flag.raised":
        severity = draw(st.sampled_from(SEVERITIES))
        return flag(severity, draw(st.sampled_from(FLAG_KINDS))), owner
    stage = draw(st.sampled_from(known_stages())) if kind == "deal.stage_entered" else None
    n = Notification(kind, DEAL, f"event:1:{kind}", AT, {}, position=1, stage=stage)
    return n, owner


filter_values = {
    "stage": known_stages(),
    "severity": SEVERITIES,
    "kind": FLAG_KINDS,
    "owner": ("ann", "bob"),
}


@st.composite
def subscriptions(draw: st.DrawFn) -> Subscription:
    types = draw(st.lists(st.sampled_from((*EVENT_TYPES, "*")), min_size=1, unique=True))
    keys = draw(st.lists(st.sampled_from(list(filter_values)), unique=True))
    filters = {
        key: tuple(draw(st.lists(st.sampled_from(filter_values[key]), min_size=1, unique=True)))
        for key in keys
    }
    return Subscription(uuid.uuid4(), tuple(types), filters)


@given(notifications())
def test_everything_unfiltered_matches_every_notification(
    item: tuple[Notification, str | None],
) -> None:
    notification, owner = item
    assert matches(Subscription(uuid.uuid4(), ("*",)), notification, owner)


@given(subscriptions(), notifications(), st.sampled_from(list(filter_values)))
def test_widening_a_filter_never_loses_a_match(
    subscription: Subscription, item: tuple[Notification, str | None], key: str
) -> None:
    notification, owner = item
    wider = Subscription(
        subscription.endpoint_id,
        subscription.event_types,
        {**subscription.filters, key: filter_values[key]},
    )
    without = Subscription(
        subscription.endpoint_id,
        subscription.event_types,
        {k: v for k, v in subscription.filters.items() if k != key},
    )
    if matches(subscription, notification, owner):
        assert matches(without, notification, owner)
        assert (key == "owner" and owner is None) or matches(wider, notification, owner)
    if not wants_type(subscription, notification.type):
        assert not matches(wider, notification, owner)
