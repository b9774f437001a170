"""`laer consume` start-up: a bad setting stops it naming the variable; JSON logs on request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from laer.local.kafka import LocalKafka


def consume_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAER_")}
    env.update({"LAER_DATABASE_URL": f"sqlite:///{tmp_path / 'laer.db'}",
                "LAER_STATE_DIR": str(tmp_path / "state")})
    env.update(extra)
    return env


def laer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "laer.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("variable", "value", "why"), [
    ("LAER_CONSUMER__MAX_POLL_RECORDS", "0", "greater than 0"),
    ("LAER_KAFKA__BOOTSTRAP_SERVERS", "localhost", "host:port"),
    ("LAER_DATABASE_URL", "mysql://x", "sqlite"),
    ("LAER_LOG_FORMAT", "xml", "'text' or 'json'"),
    ("LAER_CONSUMER__MAX_FUTURE", "soon", "duration"),
])
def test_a_bad_setting_stops_start_up_naming_it(tmp_path: Path, variable: str, value: str,
                                                why: str) -> None:
    done = laer("consume", env=consume_env(tmp_path, **{variable: value}))
    assert done.returncode != 0
    line = next((ln for ln in done.stderr.splitlines() if variable in ln), None)
    assert line is not None, done.stderr
    assert why in line and repr(value) in line
    assert "Traceback" not in done.stderr


def test_json_logs_one_object_per_line_and_sigterm_leaves_cleanly(
        kafka_broker: LocalKafka, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    topics = {f: f"laer.{f}.{suffix}" for f in ("billing", "usage", "support")}
    kafka_broker.create_topics([*topics.values(), f"laer.dlq.{suffix}"], partitions=2)
    env = consume_env(
        tmp_path, LAER_LOG_FORMAT="json", LAER_LOG_LEVEL="INFO",
        LAER_KAFKA__BOOTSTRAP_SERVERS=kafka_broker.bootstrap,
        LAER_KAFKA__BILLING_TOPIC=topics["billing"], LAER_KAFKA__USAGE_TOPIC=topics["usage"],
        LAER_KAFKA__SUPPORT_TOPIC=topics["support"], LAER_KAFKA__DLQ_TOPIC=f"laer.dlq.{suffix}",
        LAER_KAFKA__GROUP_ID=f"startup-{suffix}", LAER_CONSUMER__POLL_TIMEOUT_MS="100")
    log = tmp_path / "consume.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "laer.cli", "consume"], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 90
            while "partitions assigned: [(" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    messages = [e["message"] for e in lines if e["logger"] == "consumers.runner"]
    assert any(m.startswith("partitions assigned: [(") for m in messages)
    assert messages[-1] == "consumer stopped"
