"""Same events, same state: any cross-topic interleaving gives the event-time-order result.

The reference handles every event sorted by (time, id). Reading the three topics in any
order that keeps each topic's own order, one event at a time or in batches of any size, must
end in the same accounts, stage histories, health histories, signals (by id) and timelines.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from cross_topic import POLICY, cohorts, event_time_order, handled, interleavings, view
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_domain_batch import OwnedRepository

from laer_domain import CloudEvent, InMemoryRepository, LifecycleService

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(st.data())
def test_any_interleaving_one_at_a_time_equals_event_time_order(data: st.DataObject) -> None:
    topics = data.draw(cohorts())
    arrival = data.draw(interleavings(topics))
    assert view(handled(arrival)) == view(handled(event_time_order(topics)))


def in_batches(events: Sequence[CloudEvent], cuts: list[int], owned: bool
               ) -> InMemoryRepository:
    """The events handled by `service.batch()` runs ending at `cuts`."""
    repo: InMemoryRepository = OwnedRepository() if owned else InMemoryRepository()
    service = LifecycleService(repo, POLICY)
    bounds = sorted({0, len(events), *(c for c in cuts if 0 < c < len(events))})
    for start, end in zip(bounds, bounds[1:], strict=False):
        if isinstance(repo, OwnedRepository):
            repo.begin()
            batch = service.batch(reload=repo.reload)
        else:
            batch = service.batch()
        for event in events[start:end]:
            batch.handle(event)
    return repo


@pytest.mark.parametrize("owned", [False, True], ids=["copied", "in-place"])
@SETTINGS
@given(st.data())
def test_any_interleaving_in_batches_equals_event_time_order(owned: bool,
                                                             data: st.DataObject) -> None:
    topics = data.draw(cohorts())
    arrival = data.draw(interleavings(topics))
    cuts = data.draw(st.lists(st.integers(0, len(arrival)), max_size=6))
    assert view(in_batches(arrival, cuts, owned)) == view(handled(event_time_order(topics)))
