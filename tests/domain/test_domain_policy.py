"""Policy defaults, environment overrides and validation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from laer.settings import load_policy
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
    p = load_policy()
    assert p.grace_days == 3 and p.key_features == ["sso"]


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"grace_days": -1}, "grace_days"),
        ({"renewal_window_days": "soon"}, "renewal_window_days"),
        ({"activation_share": 1.5}, "activation_share"),
        ({"no_such_threshold": 1}, "no_such_threshold"),
    ],
)
def test_validation_errors_name_the_field(content: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        Policy(**content)
    assert field in str(err.value)


def test_inconsistent_health_bands_are_rejected() -> None:
    with pytest.raises(ValidationError, match="health_red_below"):
        Policy(health_red_below=80, health_green_min=70)
