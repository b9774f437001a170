"""The read side on a database it cannot read: a clear error, exit code 1, no password shown."""

from __future__ import annotations

from pathlib import Path

from tests.operations.test_startup import consume_env, laer


def test_a_database_without_the_schema_says_how_to_create_it(tmp_path: Path) -> None:
    for args in (("accounts", "--json"), ("account", "acct-1", "--json"), ("tasks", "--json")):
        done = laer(*args, env=consume_env(tmp_path))
        assert done.returncode == 1, done.stderr
        assert "laer db upgrade" in done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""


def test_an_unreachable_database_is_named_without_its_password(tmp_path: Path,
                                                                postgres_url: str) -> None:
    secret = "not-the-password-4711"
    wrong = postgres_url.replace("laer:laer@", f"laer:{secret}@")
    assert secret in wrong
    done = laer("accounts", "--json", env=consume_env(tmp_path, LAER_DATABASE_URL=wrong))
    assert done.returncode == 1
    assert "cannot read" in done.stderr and "***" in done.stderr
    assert secret not in done.stderr + done.stdout


def test_a_rejected_setting_never_prints_its_secret(tmp_path: Path) -> None:
    secret = "hunter2-in-a-url"
    env = consume_env(tmp_path, LAER_DATABASE_URL=f"mysql://laer:{secret}@db.example/laer",
                      LAER_SMTP__PORT="0", LAER_SMTP__PASSWORD=secret)
    done = laer("accounts", "--json", env=env)
    assert done.returncode != 0
    assert "LAER_DATABASE_URL" in done.stderr and "LAER_SMTP__PORT" in done.stderr
    assert secret not in done.stderr + done.stdout
