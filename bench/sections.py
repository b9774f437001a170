"""Where an ingested event's time goes: `python -m bench.sections [--events N] [--sqlite]`.

The benchmark's workload is encoded into in-memory records (no broker) and fed to the
consumer's `Ingestor` in poll-sized batches on PostgreSQL (or SQLite); each section of a batch
is timed by wrapping the function that does it. Prints microseconds per event by section.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import consumers.ingest as ingest
import laer_domain.service as service
import persistence.batch_repository as batch_repository
import persistence.repository as repository
import persistence.uow as uow
from bench.database import PG_DEFAULT, reset
from bench.topics import Topics, encoded
from bench.workload import events
from consumers.records import RawRecord
from consumers.runner import tune_gc
from consumers.settings import ConsumerSettings
from laer_domain.policy import Policy
from persistence.db import make_engine, upgrade

SECTIONS: list[tuple[Any, str, str]] = [
    (ingest.Ingestor, "process", "the whole batch"),
    (ingest.Ingestor, "_decode", "decode and validate the CloudEvent"),
    (batch_repository.BatchRepository, "prefetch", "read accounts and the dedup ledger"),
    (service.EventBatch, "handle", "domain rules, health included"),
    (batch_repository.BatchRepository, "write", "write states, timeline, ledger, history, signals"),
    (repository.OffsetLedger, "lock", "lock the stored offsets"),
    (repository.OffsetLedger, "advance_all", "advance the stored offsets"),
    (uow.UnitOfWork, "commit", "commit"),
]


def timed(owner: Any, name: str, totals: dict[str, float], label: str) -> None:
    """Replace `owner.name` with a wrapper adding its wall time to `totals[label]`."""
    inner: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - started

    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=ConsumerSettings().max_poll_records,
                    help="records per poll batch (default: the consumer's max_poll_records)")
    ap.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    ap.add_argument("--postgres", default=PG_DEFAULT)
    args = ap.parse_args()

    topics = Topics()
    records: list[RawRecord] = []
    next_offset: dict[tuple[str, int], int] = {}
    for topic, key, value, headers in encoded(topics, events(args.events)):
        tp = (topic, zlib.crc32(key) % 4)
        offset = next_offset.get(tp, 0)
        next_offset[tp] = offset + 1
        records.append(RawRecord(topic, tp[1], offset, key, value, tuple(headers)))
    home = Path(tempfile.mkdtemp(prefix="laer-sections-"))
    url = reset("sqlite" if args.sqlite else args.postgres, home)
    engine = make_engine(url)
    upgrade(engine)
    totals: dict[str, float] = defaultdict(float)
    for owner, name, label in SECTIONS:
        timed(owner, name, totals, label)
    families = {topic: family for family, topic in topics.by_family.items()}
    ingestor = ingest.Ingestor(uow.session_factory(engine), Policy(), "sections", families,
                               ConsumerSettings(), lambda letters: None,
                               lambda: datetime.now(UTC))
    tune_gc()
    for i in range(0, len(records), args.batch):
        ingestor.process(records[i:i + args.batch])
    engine.dispose()

    whole = totals["the whole batch"]
    table = Table("section", "seconds", "µs per event", "share",
                  title=f"{args.events:,} events, batches of {args.batch}, "
                        f"{'SQLite' if args.sqlite else 'PostgreSQL'}")
    for _, _, label in SECTIONS:
        seconds = totals[label]
        table.add_row(label, f"{seconds:.2f}", f"{seconds / args.events * 1e6:.1f}",
                      f"{seconds / whole:.0%}")
    Console().print(table)
    print(f"{args.events / whole:,.0f} events/s without the broker")


if __name__ == "__main__":
    main()
