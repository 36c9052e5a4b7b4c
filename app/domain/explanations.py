"""One readable sentence per flag, built only from the numbers the rule judged (so the
sentence and the figures can never disagree)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def number(value: float) -> str:
    """A figure as a person writes it: at most one decimal, no trailing ".0"."""
    rounded = round(float(value), 1)
    return f"{rounded:.0f}" if rounded == int(rounded) else f"{rounded:.1f}"


def _days(value: float) -> str:
    return f"{number(value)} day" + ("" if number(value) == "1" else "s")


def _listed(items: Sequence[str]) -> str:
    words = [item.replace("_", " ") for item in items]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def explain(kind: str, numbers: Mapping[str, Any], stage: str) -> str:
    """The flag's one-sentence explanation, e.g. "In discovery for 15 days, 2.1x the 7
    days expected." `stage` is the deal's stage the flag was judged in."""
    n = numbers
    where = stage.replace("_", " ")
    match kind:
        case "slow_in_stage":
            return (
                f"In {where} for {_days(n['days_in_stage'])}, {number(n['ratio'])}x the "
                f"{_days(n['expected_days'])} expected."
            )
        case "inactive":
            return (
                f"No buyer activity for {_days(n['days_without_buyer_activity'])}"
                f" (the limit in {where} is {_days(n['threshold_days'])})."
            )
        case "next_step_overdue":
            return (
                f'The next step "{n["next_step"]}" was due {n["due_date"]}'
                f" and is {_days(n['days_overdue'])} overdue."
            )
        case "no_next_step":
            return f"No next step has been set since {str(n['since'])[:10]}."
        case "close_date_passed":
            return (
                f"The close date {n['close_date']} passed {_days(n['days_past'])} ago"
                " with the deal still open."
            )
        case "missing_required_fields":
            return f"{where.capitalize()} requires {_listed(n['missing'])}, still missing."
        case "ghosting":
            return (
                f"The buyer has been silent for {_days(n['silent_days'])}, past the "
                f"{_days(n['threshold_days'])} their rhythm allows (a median gap of "
                f"{_days(n['median_gap_days'])} over {n['activities_considered']} activities)."
            )
        case "stuck_blocker":
            return (
                f"A {str(n['category']).replace('_', ' ')} blocker has been open for "
                f"{_days(n['days_open'])}, over the {_days(n['threshold_days'])} limit."
            )
        case "nurture_resume_due":
            return f"Parked in nurture until {n['resume_on']}: time to resume or close it."
        case "stage_evidence_retracted":
            count = len(n["retracted_evidence_ids"])
            return (
                f"{count} evidence item{'s' if count != 1 else ''} behind "
                f"{_listed(n['criteria'])} (earned in {_listed(n['stages'])})"
                f" {'were' if count != 1 else 'was'} retracted."
            )
        case _:
            return f"{kind.replace('_', ' ').capitalize()}."
