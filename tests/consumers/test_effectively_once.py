"""Crashes, scale-out and clean shutdown: the database ends exactly as an uninterrupted run."""

from __future__ import annotations

import random
import threading
import time
from functools import partial
from typing import Any

import pytest
from kafka import KafkaAdminClient

from laer.local.kafka import LocalKafka
from tests.consumers.conftest import Harness
from tests.consumers.workload import differences, reference, snapshot, workload

pytestmark = [pytest.mark.kafka]


def assert_exact(h: Harness, expected: dict[str, Any]) -> None:
    actual = snapshot(h.sessions)
    diff = differences(actual, expected)
    assert not diff, "state differs from an uninterrupted run:\n" + "\n".join(diff)
    # no duplicated effect: each signal once, queued once
    assert len(actual["outbox"]) == len(set(actual["outbox"])) == len(actual["signals"])


def _progress(h: Harness, before: int, target: int, producer: threading.Thread) -> bool:
    done = h.consumed()
    return done > before or (done >= target and not producer.is_alive())


def test_kill_minus_nine_at_random_points_changes_nothing(
        kafka_broker: LocalKafka, db_url: str, harness_factory: Any) -> None:
    rounds = workload(200, seed=11)
    expected = reference(rounds)
    h: Harness = harness_factory(kafka_broker, db_url)
    rnd = random.Random()
    h.start()
    kills: list[tuple[int, int, int]] = []  # (round, consumed at the kill, target)
    target = 0
    rate = 400.0
    for i, events in enumerate(rounds):
        target += len(events)
        producer = threading.Thread(target=h.produce, args=(events, rate))
        producer.start()
        # a random point while the round still streams in ...
        time.sleep(rnd.uniform(0.1, max(0.2, 0.7 * len(events) / rate)))
        kills.append((i, h.consumed(), target))
        h.processes["consume"].kill()
        h.start()
        if len(events) > 1000:  # ... and one while the restarted consumer works off the backlog
            before = h.consumed()
            h.wait_for(partial(_progress, h, before, target, producer), 60,
                       "the restarted consumer making progress")
            time.sleep(rnd.uniform(0.0, 0.3))
            kills.append((i, h.consumed(), target))
            h.processes["consume"].kill()
            h.start()
        producer.join()
        h.wait_consumed(timeout=120)
    midstream = [k for k in kills if k[1] < k[2]]
    assert len(midstream) >= 5, f"only {len(midstream)} kills hit a flowing stream: {kills}"
    assert_exact(h, expected)
    assert h.close()["consume"] == 0


def test_two_consumers_then_one_killed_survivor_takes_over(
        kafka_broker: LocalKafka, db_url: str, harness_factory: Any) -> None:
    rounds = workload(100, seed=5, prefix="pair")
    expected = reference(rounds)
    h: Harness = harness_factory(kafka_broker, db_url)
    first, second = h.start("consume-a"), h.start("consume-b")
    h.wait_assigned(first)
    h.wait_assigned(second)
    target = 0
    for i, events in enumerate(rounds):
        target += len(events)
        if i == 2:  # kill one mid-round: its partitions (and uncommitted batch) move over
            producer = threading.Thread(target=h.produce, args=(events, 700.0))
            producer.start()
            before = h.consumed()
            h.wait_progress(before, "progress in round 2", more_than=100)
            second.kill()
            producer.join()
        else:
            h.produce(events)
        h.wait_consumed(timeout=120)
    log = first.log_path.read_text()
    assert log.count("partitions assigned") >= 2, "the survivor never took over"
    assert_exact(h, expected)
    assert h.close()["consume-a"] == 0


def test_sigterm_finishes_the_batch_commits_and_leaves_the_group(
        kafka_broker: LocalKafka, harness_factory: Any, tmp_path: Any) -> None:
    rounds = workload(60, seed=3, prefix="term")
    expected = reference(rounds)
    h: Harness = harness_factory(kafka_broker, f"sqlite:///{tmp_path / 'term.db'}")
    from persistence.db import make_engine, upgrade

    upgrade(make_engine(h.db_url))
    proc = h.start("consume-0")
    stops = []
    for n, events in enumerate(rounds, 1):
        h.wait_assigned(proc)
        before = h.consumed()
        producer = threading.Thread(target=h.produce, args=(events, 1000.0))
        producer.start()
        h.wait_progress(before, "a batch of this round")
        time.sleep(0.1)
        assert proc.stop(timeout=30) == 0, proc.tail()
        stops.append(proc.log_path.read_text().count("consumer stopped"))  # its own log
        admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
        try:
            group = admin.describe_groups([h.group])[h.group]
        finally:
            admin.close()
        assert not group["members"], f"still in the group after SIGTERM: {group}"
        proc = h.start(f"consume-{n}")
        producer.join()
        h.wait_consumed(timeout=60)
    assert stops == [1] * len(rounds)
    h.wait_assigned(proc)
    assert_exact(h, expected)
    assert set(h.close().values()) == {0}
