"""The weekly review as of now pages its SQL listing merged with the deals judged in Python
(neither moved nor flagged in the read model, but flagged by time since): any page of the
merge is that page of all of them in the review's order, though the listing is read only
from a bounded number of places before the page."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.projections.flags import Listed
from app.service.inspections import merged_page

OWNERS = st.sampled_from(["ann", "Ann", "bo", "bob", "é"])
PLACES = st.tuples(OWNERS, st.text(max_size=2), st.uuids())


@given(
    deals=st.lists(PLACES, unique_by=lambda p: p[2], max_size=30),
    data=st.data(),
)
def test_a_page_of_the_listing_merged_with_judged_deals_is_that_page_of_them_all(
    deals: list[Listed], data: st.DataObject
) -> None:
    judged = data.draw(st.lists(st.booleans(), min_size=len(deals), max_size=len(deals)))
    raised = [place for place, yes in zip(deals, judged, strict=True) if yes]
    listing = sorted(place for place, yes in zip(deals, judged, strict=True) if not yes)
    unsure = len(raised) + data.draw(st.integers(0, 4))  # judged, some not raised
    start = data.draw(st.integers(0, len(deals) + 3))
    limit = data.draw(st.none() | st.integers(1, 8))
    # As the review reads it: from `unsure` places before the page.
    offset = max(0, start - unsure)
    window = listing[offset:] if limit is None else listing[offset : start + limit]
    end = None if limit is None else start + limit
    expected = [deal_id for *_, deal_id in sorted(deals)[start:end]]
    assert merged_page(window, offset, raised, start, limit) == expected
