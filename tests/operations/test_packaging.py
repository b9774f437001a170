"""The production stack file and start-up validation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from typer.main import get_command

from laer.cli import app

ROOT = Path(__file__).resolve().parents[2]


def laer_commands() -> set[str]:
    group = get_command(app)
    names: set[str] = set()
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        names.add(name)
        for sub in getattr(cmd, "commands", {}):
            names.add(f"{name} {sub}")
    return names


def test_compose_file_has_the_production_services_with_health_checks() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    for name in ("kafka", "postgres", "prefect-server", "executor", "consumer", "dispatcher"):
        assert name in services, name
    for name in ("kafka", "postgres", "prefect-server", "consumer"):
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert set(doc["volumes"]) >= {"kafka-data", "postgres-data"}
    assert "postgresql" in services["prefect-server"]["environment"][
        "PREFECT_API_DATABASE_CONNECTION_URL"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    for vol in services["postgres"]["volumes"]:
        src = vol.split(":")[0]
        if src.startswith("./"):
            assert (ROOT / src).exists(), src


def test_every_laer_command_in_compose_exists() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    known = laer_commands()
    built = [s for s in doc["services"].values() if s.get("build") and "entrypoint" not in s]
    assert built, "no service runs the laer image with its default entrypoint"
    for service in built:
        words = [w for w in service["command"] if not w.startswith("-")]
        assert " ".join(words[:2]) in known or words[0] in known, service["command"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["laer"]' in dockerfile


def test_a_bad_setting_stops_start_up_naming_it(tmp_path: Path) -> None:
    env = dict(os.environ, LAER_KAFKA__BOOTSTRAP_SERVERS="no-port-here",
               LAER_CONSUMER__MAX_POLL_RECORDS="-3")
    done = subprocess.run([sys.executable, "-m", "laer.cli", "accounts"], env=env,
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode != 0
    assert "LAER_KAFKA__BOOTSTRAP_SERVERS" in done.stderr
    assert "LAER_CONSUMER__MAX_POLL_RECORDS" in done.stderr
    assert "Traceback" not in done.stderr


def test_secrets_never_show_in_settings_output() -> None:
    from laer.settings import Settings

    settings = Settings(kafka={"sasl_password": "hunter2"}, webhook_secret="s3cret")  # type: ignore[arg-type]
    text = repr(settings) + str(settings.model_dump())
    assert "hunter2" not in text and "s3cret" not in text
