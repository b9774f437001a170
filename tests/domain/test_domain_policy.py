"""Policy defaults, environment overrides and policy files."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from laer_domain import Policy


def test_defaults_follow_the_design() -> None:
    p = Policy()
    assert (p.renewal_window_days, p.grace_days) == (90, 14)
    assert p.activation_share == Decimal("0.6")
    assert (p.activation_days_required, p.activation_window_days) == (7, 14)
    assert p.expansion_usage_share == Decimal("0.9")
    assert (p.escalations_for_risk, p.escalation_window_days) == (2, 30)
    assert (p.nps_detractor_max, p.csat_detractor_max) == (6, 2)
    assert p.usage_drop_share == Decimal("0.4")
    assert (p.churn_risk_quiet_days, p.adoption_stall_days, p.feature_underused_days) == (
        30,
        30,
        14,
    )
    assert p.key_features == ["reports", "integrations"]
    assert (p.health_green_min, p.health_red_below) == (70, 40)


def test_policy_is_frozen() -> None:
    with pytest.raises(ValidationError):
        Policy().grace_days = 3  # type: ignore[misc]


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAER_POLICY_GRACE_DAYS", "3")
    monkeypatch.setenv("LAER_POLICY_KEY_FEATURES", '["sso"]')
    p = Policy()
    assert p.grace_days == 3 and p.key_features == ["sso"]


def test_from_toml_file_with_env_winning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("renewal_window_days = 60\ngrace_days = 7\nactivation_share = 0.5\n")
    p = Policy.from_file(path)
    assert (p.renewal_window_days, p.grace_days, p.activation_share) == (60, 7, Decimal("0.5"))
    monkeypatch.setenv("LAER_POLICY_GRACE_DAYS", "21")
    p = Policy.from_file(path)
    assert (p.renewal_window_days, p.grace_days) == (60, 21)


def test_from_json_file_and_policy_table(tmp_path: Path) -> None:
    json_path = tmp_path / "policy.json"
    json_path.write_text('{"adoption_stall_days": 45, "key_features": ["api"]}')
    p = Policy.from_file(json_path)
    assert p.adoption_stall_days == 45 and p.key_features == ["api"]
    toml_path = tmp_path / "laer.toml"
    toml_path.write_text("[policy]\nescalations_for_risk = 3\n")
    assert Policy.from_file(toml_path).escalations_for_risk == 3


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("grace_days = -1", "grace_days"),
        ('renewal_window_days = "soon"', "renewal_window_days"),
        ("activation_share = 1.5", "activation_share"),
        ("no_such_threshold = 1", "no_such_threshold"),
    ],
)
def test_validation_errors_name_the_field(tmp_path: Path, content: str, field: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(content + "\n")
    with pytest.raises(ValidationError) as err:
        Policy.from_file(path)
    assert field in str(err.value)


def test_inconsistent_health_bands_are_rejected() -> None:
    with pytest.raises(ValidationError, match="health_red_below"):
        Policy(health_red_below=80, health_green_min=70)
