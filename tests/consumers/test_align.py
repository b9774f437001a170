"""Event-time alignment without a broker: frontiers, ends, held records, offsets, waits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from consumers.align import Aligner, Item, ReadingClock
from consumers.dlq import DeadLetter
from consumers.records import RawRecord
from laer_domain.events import CloudEvent
from tests.consumers.offline import T0, ticket

U, B, S = "t.usage", "t.billing", "t.support"


@dataclass
class Clock:
    """A monotonic clock the test moves by hand."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now


class Topics:
    """Records with event times, offsets counted per (topic, partition)."""

    def __init__(self) -> None:
        self.next: dict[tuple[str, int], int] = {}

    def record(self, topic: str, hours: float, partition: int = 0) -> Item:
        """A support event `hours` after T0 on `topic`/`partition` (the family is not read)."""
        offset = self.next.get((topic, partition), 0)
        self.next[(topic, partition)] = offset + 1
        event = CloudEvent.model_validate(ticket(f"acct-{partition}", int(hours),
                                                 f"{topic}-{offset}"))
        return RawRecord(topic, partition, offset, None, None), event

    def letter(self, topic: str, partition: int = 0) -> Item:
        """A record that is no event (a dead letter)."""
        offset = self.next.get((topic, partition), 0)
        self.next[(topic, partition)] = offset + 1
        rec = RawRecord(topic, partition, offset, None, None)
        return rec, DeadLetter(rec, "invalid_json", "x")


def aligner(clock: Callable[[], float], **kw: Any) -> Aligner:
    a = Aligner(max_wait_s=kw.pop("max_wait_s", 5.0), bound=kw.pop("bound", 100),
                clock=clock, **kw)
    a.assign([(t, p) for t in (U, B, S) for p in (0, 1)])
    return a


def where(items: list[Item]) -> list[tuple[str, int, int]]:
    return [(r.topic, r.partition, r.offset) for r, _ in items]


def hours(items: list[Item]) -> list[float]:
    return [(e.time - T0).total_seconds() / 3600 for _, e in items
            if isinstance(e, CloudEvent)]


def test_a_record_waits_until_every_co_partition_is_read_past_its_time() -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock)
    a.add([t.record(B, 10), t.record(B, 20)])
    assert a.release().items == []  # usage and support: nothing read yet, not at their end
    a.add([t.record(U, 5), t.record(U, 12)])
    assert a.release().items == []  # support still unknown
    a.set_at_end((S, 0), True)  # an idle topic holds nothing back
    out = a.release()
    # usage read to 12 h, billing to 20 h: everything up to 12 h, merged in event time
    assert hours(out.items) == [5, 10, 12] and out.forced == 0
    assert a.buffered == 1 and a.earliest_held() == {(B, 0): 1}
    a.set_at_end((U, 0), True)
    assert hours(a.release().items) == [20]
    assert a.buffered == 0


def test_partitions_are_aligned_each_on_its_own() -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock)
    for tp in [(S, 0), (S, 1)]:
        a.set_at_end(tp, True)
    a.add([t.record(U, 3, 1), t.record(B, 1, 1), t.record(U, 1, 0)])
    # partition 1 has both topics read (billing to 1 h, usage to 3 h); partition 0 lacks billing
    assert where(a.release().items) == [(B, 1, 0)]
    assert a.earliest_held() == {(U, 1): 0, (U, 0): 0}


def test_later_records_of_a_partition_wait_behind_a_held_one() -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock)
    a.set_at_end((S, 0), True)
    # usage goes back in time within its partition: 8 h then 2 h; billing read to 5 h
    a.add([t.record(U, 8), t.record(U, 2), t.record(B, 5)])
    # watermark 5 h: 2 h would be due, but it stays behind 8 h (the partition's order)
    assert where(a.release().items) == [(B, 0, 0)]
    a.set_at_end((B, 0), True)
    assert hours(a.release().items) == [8, 2]  # merged by time, each partition in its order


def test_a_co_partition_silent_for_the_bound_holds_nothing_back() -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock, max_wait_s=5.0)
    a.set_at_end((S, 0), True)
    a.add([t.record(U, 1), t.record(U, 2)])
    clock.now = 4.9
    a.add([t.record(U, 3)])  # waiting longer than the bound for processing changes nothing
    assert a.release().items == []
    clock.now = 5.0  # billing 0: assigned 5 s ago, nothing read, not at its end: silent
    out = a.release()
    assert hours(out.items) == [1, 2, 3] and out.forced == 3
    a.add([t.record(B, 0), t.record(U, 4)])  # billing speaks again: it holds usage back
    assert hours(a.release().items) == [0] and a.buffered == 1


def test_a_paused_co_partition_is_never_taken_as_silent() -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock, max_wait_s=5.0, bound=1)
    a.set_at_end((S, 0), True)
    a.add([t.record(B, 5), t.record(B, 6)])  # billing ahead: paused, so nothing read from it
    assert a.pause_changes() == ([(B, 0)], [])
    clock.now = 10.0  # usage silent: left out; billing, paused, still counts at its 6 h
    assert a.low_watermark(0) == T0 + timedelta(hours=6)
    assert hours(a.release().items) == [5, 6]


def test_dead_letters_wait_for_nothing_but_keep_their_place() -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock)
    a.add([t.letter(U), t.record(U, 4), t.letter(U)])
    # the first letter is due at once; the second waits behind the usage event
    assert where(a.release().items) == [(U, 0, 0)]
    assert a.earliest_held() == {(U, 0): 1}


def test_released_records_are_a_prefix_of_each_partition_so_commits_never_pass_held_ones(
        ) -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock)
    a.set_at_end((S, 0), True)
    a.add([t.record(U, h) for h in (1, 2, 3, 9, 4)] + [t.record(B, h) for h in (0, 5)])
    out = a.release()  # watermark: min(usage 9, billing 5) = 5
    assert where(out.items) == [(B, 0, 0), (U, 0, 0), (U, 0, 1), (U, 0, 2), (B, 0, 1)]
    # the offset a batch commits (after its last released record) is the earliest held one
    committed = {}
    for rec, _ in out.items:
        committed[(rec.topic, rec.partition)] = rec.offset + 1
    assert committed[(U, 0)] == a.earliest_held()[(U, 0)] == 3
    assert (B, 0) not in a.earliest_held()


def test_disabled_releases_everything_as_read() -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock, enabled=False)
    a.add([t.record(U, 5), t.record(B, 1)])
    assert sorted(hours(a.release().items)) == [1, 5]


def test_revoked_partitions_drop_what_they_held_and_stop_holding_others() -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock)
    a.add([t.record(U, 1), t.record(B, 3)])
    # where reading starts again if usage 0 comes back (the client keeps its fetch position)
    assert a.revoke([(S, 0), (U, 0)]) == {(U, 0): 0}
    assert a.earliest_held() == {(B, 0): 0}
    assert hours(a.release().items) == [3]  # billing alone on partition 0 now


def test_failed_batches_are_held_again_in_front_in_offset_order() -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock)
    for tp in [(S, 0), (B, 0)]:
        a.set_at_end(tp, True)
    a.add([t.record(U, h) for h in (1, 2, 3)])
    out = a.release()
    a.add([t.record(U, 4)])
    a.restore(out.items)
    assert where(a.release().items) == [(U, 0, 0), (U, 0, 1), (U, 0, 2), (U, 0, 3)]


def test_a_partition_holding_more_than_the_bound_is_paused_until_half_drained() -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock, bound=4)
    a.add([t.record(B, h) for h in range(1, 7)])
    assert a.release().items == []
    assert a.pause_changes() == ([(B, 0)], [])
    assert a.pause_changes() == ([], [])
    a.add([t.record(U, 4)])  # billing up to 4 h is due; 5 and 6 h are left: 2 <= 4 // 2
    a.set_at_end((S, 0), True)
    assert hours(a.release().items) == [1, 2, 3, 4, 4]
    assert a.pause_changes() == ([], [(B, 0)])
    assert a.paused == frozenset()


def test_a_partition_that_goes_back_to_reading_holds_again() -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock)
    a.set_at_end((S, 0), True)
    a.set_at_end((B, 0), True)
    a.add([t.record(U, 1)])
    assert hours(a.release().items) == [1]
    a.set_at_end((B, 0), False)  # more billing records arrived: its frontier counts again
    a.add([t.record(U, 2), t.record(B, 1)])
    assert where(a.release().items) == [(B, 0, 0)]  # usage's 2 h waits for billing now


def test_a_limited_release_takes_the_earliest_and_keeps_the_rest_in_front() -> None:
    clock, t = Clock(), Topics()
    a = aligner(clock, max_wait_s=5.0)
    for tp in [(S, 0), (B, 0), (U, 0)]:
        a.set_at_end(tp, True)
    a.add([t.record(U, h) for h in (1, 3, 5)] + [t.record(B, h) for h in (2, 4)])
    assert hours(a.release(limit=3).items) == [1, 2, 3]
    assert a.earliest_held() == {(U, 0): 2, (B, 0): 1}
    assert hours(a.release().items) == [4, 5]


def test_a_release_keeps_each_partition_number_together_oldest_first() -> None:
    # a batch is a prefix of the release: merged across partition numbers by time, each batch
    # spanned every number's accounts (and wrote each account for fewer of its events)
    clock, t = Clock(), Topics()
    a = aligner(clock)
    for tp in [(t_, p) for t_ in (U, B, S) for p in (0, 1)]:
        a.set_at_end(tp, True)
    a.add([t.record(U, h, partition=1) for h in (1, 3, 5)]
          + [t.record(U, h, partition=0) for h in (2, 4)]
          + [t.record(B, h, partition=1) for h in (2, 6)])
    out = a.release(limit=5)
    # partition 1's earliest record (1 h) is the oldest: its five records first, by time
    assert [(r.partition, h) for (r, _), h in zip(out.items, hours(out.items), strict=True)
            ] == [(1, 1), (1, 2), (1, 3), (1, 5), (1, 6)]
    assert a.earliest_held() == {(U, 0): 0}
    assert hours(a.release().items) == [2, 4]


def test_time_spent_applying_batches_is_no_silence() -> None:
    # a backlog's batch under load takes seconds; meanwhile no partition is read, but none
    # went silent: its records wait in the client, and were released early (forced)
    wall = Clock()
    reading = ReadingClock(wall)
    t = Topics()
    a = aligner(reading, max_wait_s=5.0)
    a.set_at_end((S, 0), True)
    a.add([t.record(U, 1), t.record(U, 2), t.record(B, 0)])
    assert hours(a.release().items) == [0]
    with reading.busy():
        wall.now += 60.0
    assert a.release().items == []  # billing is still the one to wait for
    wall.now += 5.0  # read for 5 s without a billing record: silent now
    out = a.release()
    assert hours(out.items) == [1, 2] and out.forced == 2
