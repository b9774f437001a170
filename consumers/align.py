"""Event-time alignment of co-partitioned topics: a backlog is applied nearly in event time.

The source topics are co-partitioned (same key, same partition count), so partition i of
every topic holds the same accounts. Read as a backlog, the topics advance at different
paces in event time (billing has far fewer events a day than usage), and without alignment
most of one topic's events would arrive after later ones of another: each such late event
rebuilds its account (`laer_domain.resequence`), which is correct but costly.

Per partition number i, the *frontier* of topic t is the latest event time read from (t, i)
(a running maximum), and (t, i) is *at its end* when its position reached the highwater
mark: nothing more to read, so it holds nothing back (+infinity). The *low watermark* of i is
the least of its topics' frontiers; an assigned (t, i) nothing was read from yet, and not at
its end, holds everything back (-infinity). A record is released only once its time is at
or before the low watermark of its partition; until then it waits here, and every later
record of the same (t, i) waits behind it, so each partition is released as a prefix of
what was read, in offset order. Offsets follow from that: a batch commits the offset after
its last released record of each partition, which is the offset of the earliest one still
held, and a crash reads the held records again. A co-partition nothing was read from for
`max_wait_s` (and not paused here) is taken as idle and holds nothing back, so a silent
producer or a stuck fetch delays the others by that much at most; what then arrives late is
re-sequenced as before. (The wait is counted from the co-partition's last record, not from
each held record's arrival: on a backlog, records wait their turn to be processed for
longer than that, which would release them early for no reason.) Records that are no
events (dead letters) have no time and never hold anything back.

Pure: no Kafka client, no clock of its own (the monotonic clock is passed in).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from consumers.dlq import DeadLetter
from consumers.records import RawRecord
from laer_domain.events import CloudEvent

TopicPartition = tuple[str, int]
Item = tuple[RawRecord, CloudEvent | DeadLetter]

EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Held:
    """A read record waiting for its partition's low watermark."""

    record: RawRecord
    item: CloudEvent | DeadLetter
    since: float  # monotonic seconds when it was read

    @property
    def time(self) -> datetime:
        """Its event time; a dead letter sorts first and waits for nothing."""
        return self.item.time if isinstance(self.item, CloudEvent) else EARLIEST

    @property
    def order(self) -> tuple[datetime, str]:
        """(time, id): the order released records are merged in."""
        return (self.item.time, self.item.id) if isinstance(self.item, CloudEvent) else (
            EARLIEST, "")


class ReadingClock:
    """Seconds of `clock` with the time spent applying batches left out (`busy`).

    A co-partition is silent only while the consumer reads and gets nothing from it: on a
    backlog under load each batch takes a second or more, and kafka-python hands a poll's
    records from one or two partitions, so a topic's partition was not read for 5 s of wall
    time while its records waited in the client, and was released early (forced) as silent.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._busy = 0.0

    def __call__(self) -> float:
        return self._clock() - self._busy

    @contextmanager
    def busy(self) -> Iterator[None]:
        """A span of work that does not count as waiting for records."""
        started = self._clock()
        try:
            yield
        finally:
            self._busy += self._clock() - started


def _order(h: Held) -> tuple[datetime, str]:
    """A held record's merge key."""
    return h.order


@dataclass
class Released:
    """Records to apply now: every partition's in offset order, merged by event time within
    each partition number, partition numbers one after another."""

    items: list[Item] = field(default_factory=list)
    forced: int = 0  # released because they waited longer than the bound, not by watermark


class Aligner:
    """Holds read records until every co-partition has caught up (see the module docstring)."""

    def __init__(self, *, max_wait_s: float, bound: int, enabled: bool = True,
                 clock: Callable[[], float]) -> None:
        self.max_wait_s = max_wait_s
        self.bound = bound
        self.enabled = enabled
        self._clock = clock
        self._assigned: dict[int, set[str]] = {}  # partition number -> its assigned topics
        self._frontier: dict[TopicPartition, datetime] = {}
        self._at_end: set[TopicPartition] = set()
        self._held: dict[TopicPartition, deque[Held]] = {}
        self._paused: set[TopicPartition] = set()
        self._last_read: dict[TopicPartition, float] = {}  # monotonic, or when assigned

    # -- assignment -------------------------------------------------------------------------

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions now assigned: nothing read from them yet."""
        now = self._clock()
        for topic, partition in tps:
            self._assigned.setdefault(partition, set()).add(topic)
            self._last_read[(topic, partition)] = now

    def assigned(self) -> list[TopicPartition]:
        """The partitions assigned now."""
        return [(t, p) for p, topics in self._assigned.items() for t in topics]

    def revoke(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Partitions taken away: their held records are dropped (their new owner reads them
        again from the stored offsets, which never passed them); returns each one's earliest
        held offset, where reading must start again if it is assigned back."""
        earliest: dict[TopicPartition, int] = {}
        for tp in list(tps):
            topic, partition = tp
            topics = self._assigned.get(partition)
            if topics is not None:
                topics.discard(topic)
                if not topics:
                    del self._assigned[partition]
            earliest.update(self.forget([tp]))
        return earliest

    def forget(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Drop what is known and held of `tps` (they will be read again from the returned
        offsets: each one's earliest held record); they stay assigned."""
        earliest: dict[TopicPartition, int] = {}
        for tp in list(tps):
            held = self._held.pop(tp, None)
            if held:
                earliest[tp] = held[0].record.offset
            self._frontier.pop(tp, None)
            self._at_end.discard(tp)
            self._paused.discard(tp)
            self._last_read[tp] = self._clock()
        return earliest

    # -- reading ----------------------------------------------------------------------------

    def add(self, items: Sequence[Item]) -> None:
        """Records just read, each partition's in offset order."""
        now = self._clock()
        for rec, item in items:
            tp = (rec.topic, rec.partition)
            self._held.setdefault(tp, deque()).append(Held(rec, item, now))
            self._last_read[tp] = now
            if isinstance(item, CloudEvent):
                seen = self._frontier.get(tp)
                if seen is None or item.time > seen:
                    self._frontier[tp] = item.time

    def set_at_end(self, tp: TopicPartition, at_end: bool) -> None:
        """Whether (t, i) has been read to its end (position at the highwater mark)."""
        if at_end:
            self._at_end.add(tp)
        else:
            self._at_end.discard(tp)

    def low_watermark(self, partition: int, strict: bool = False) -> datetime:
        """The latest event time every assigned topic of `partition` has been read to;
        not `strict`: a topic silent for `max_wait_s` (and not paused) is left out."""
        now = self._clock()
        marks = []
        for t in self._assigned.get(partition, ()):
            tp = (t, partition)
            if tp in self._at_end or (
                    not strict and tp not in self._paused
                    and now - self._last_read.get(tp, now) >= self.max_wait_s):
                marks.append(LATEST)
            else:
                marks.append(self._frontier.get(tp, EARLIEST))
        return min(marks, default=LATEST)

    # -- releasing --------------------------------------------------------------------------

    def release(self, everything: bool = False, limit: int | None = None) -> Released:
        """Take every record whose time has come (or whose co-partitions went silent), merged
        by time;
        `everything`: all held records (before a record is skipped by its position);
        `limit`: at most that many (the earliest; the rest stay held, in front)."""
        out = Released()
        runs: list[list[Held]] = []
        marks: dict[int, tuple[datetime, datetime]] = {}
        for tp, held in self._held.items():
            if not held:
                continue
            if everything or not self.enabled:
                mark, strict = LATEST, LATEST
            else:
                if tp[1] not in marks:
                    marks[tp[1]] = (self.low_watermark(tp[1]),
                                    self.low_watermark(tp[1], strict=True))
                mark, strict = marks[tp[1]]
            run: list[Held] = []
            while held and held[0].time <= mark:
                if held[0].time > strict:  # only because a co-partition went silent
                    out.forced += 1
                run.append(held.popleft())
            if run:
                runs.append(run)
        # Grouped by partition number, each group merged by time: an account's events are all
        # in one group, so a batch (a prefix) spans few partition numbers and so few accounts,
        # and each is written once for more of its events (merged across all partitions, a
        # batch touched 2.4x the accounts of one read partition by partition; bench.ingest).
        # The group whose earliest record is oldest goes first, so none waits behind the rest.
        # heapq.merge compares only the heads, so each run keeps its own (offset) order, and
        # any prefix of the result is a prefix of every partition's run.
        by_number: dict[int, list[list[Held]]] = {}
        for run in runs:
            by_number.setdefault(run[0].record.partition, []).append(run)
        groups = [list(heapq.merge(*group, key=_order)) for group in by_number.values()]
        groups.sort(key=lambda group: _order(group[0]))
        merged = [h for group in groups for h in group]
        if limit is not None and len(merged) > limit:
            back: dict[TopicPartition, list[Held]] = {}
            for h in merged[limit:]:
                back.setdefault((h.record.topic, h.record.partition), []).append(h)
            for tp, rest in back.items():
                self._held[tp].extendleft(reversed(rest))
            merged = merged[:limit]
        out.items = [(h.record, h.item) for h in merged]
        return out

    def restore(self, items: Sequence[Item]) -> None:
        """Put released records back in front of their partitions (their batch failed)."""
        now = self._clock()
        by_tp: dict[TopicPartition, list[Held]] = {}
        for rec, item in items:
            by_tp.setdefault((rec.topic, rec.partition), []).append(Held(rec, item, now))
        for tp, held in by_tp.items():
            held.sort(key=lambda h: h.record.offset)
            self._held.setdefault(tp, deque()).extendleft(reversed(held))

    # -- flow control -----------------------------------------------------------------------

    def pause_changes(self) -> tuple[list[TopicPartition], list[TopicPartition]]:
        """Partitions to pause (more held than the bound) and to resume (half drained)."""
        pause = [tp for tp, held in self._held.items()
                 if len(held) > self.bound and tp not in self._paused]
        resume = [tp for tp in self._paused if len(self._held.get(tp, ())) <= self.bound // 2]
        self._paused.update(pause)
        self._paused.difference_update(resume)
        return pause, resume

    @property
    def paused(self) -> frozenset[TopicPartition]:
        """Partitions paused because too much of them is held."""
        return frozenset(self._paused)

    @property
    def buffered(self) -> int:
        """Records held now."""
        return sum(len(held) for held in self._held.values())

    def earliest_held(self) -> dict[TopicPartition, int]:
        """The offset of each partition's earliest held record: no commit may pass it."""
        return {tp: held[0].record.offset for tp, held in self._held.items() if held}

    def held(self) -> Iterator[Item]:
        """Every held record (in no particular order across partitions)."""
        for held in self._held.values():
            for h in held:
                yield h.record, h.item
