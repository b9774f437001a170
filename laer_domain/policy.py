"""Configurable thresholds of the lifecycle rules (entrypoints read overrides: laer.settings)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

Share = Annotated[Decimal, Field(gt=0, le=1)]
Days = Annotated[int, Field(ge=1)]
Score = Annotated[int, Field(ge=0, le=100)]
Weight = Annotated[Decimal, Field(ge=0)]


class Policy(BaseModel):
    """Lifecycle thresholds; entrypoints read LAER_POLICY_<NAME> overrides (`laer.settings`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # stage transitions
    renewal_window_days: Days = 90
    grace_days: Annotated[int, Field(ge=0)] = 14
    activation_share: Share = Decimal("0.6")
    activation_days_required: Days = 7
    activation_window_days: Days = 14
    # signals
    expansion_usage_share: Share = Decimal("0.9")
    escalations_for_risk: Days = 2
    escalation_window_days: Days = 30
    nps_detractor_max: Annotated[int, Field(ge=0, le=10)] = 6
    csat_detractor_max: Annotated[int, Field(ge=0, le=5)] = 2
    usage_drop_share: Share = Decimal("0.4")
    usage_drop_days: Days = 7
    churn_risk_quiet_days: Days = 30
    adoption_stall_days: Days = 30
    feature_underused_days: Days = 14
    key_features: list[str] = Field(default_factory=lambda: ["reports", "integrations"])
    # health: weighted mean of components, each 0..100
    health_weight_usage: Weight = Decimal("0.4")
    health_weight_support: Weight = Decimal("0.3")
    health_weight_billing: Weight = Decimal("0.3")
    health_green_min: Score = 70
    health_red_below: Score = 40
    health_usage_unknown: Score = 50
    health_ticket_penalty_low: Score = 2
    health_ticket_penalty_normal: Score = 5
    health_ticket_penalty_high: Score = 10
    health_ticket_penalty_urgent: Score = 20
    health_escalation_penalty: Score = 15
    health_detractor_penalty: Score = 30
    health_survey_relevance_days: Days = 90
    health_failed_payment_penalty: Score = 35

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.health_red_below > self.health_green_min:
            raise ValueError("health_red_below must not exceed health_green_min")
        if self.activation_days_required > self.activation_window_days:
            raise ValueError("activation_days_required must not exceed activation_window_days")
        weights = self.health_weight_usage + self.health_weight_support
        if weights + self.health_weight_billing <= 0:
            raise ValueError("health_weight_*: at least one weight must be positive")
        return self

    def ticket_penalty(self, priority: str) -> int:
        """Return the health penalty for one open ticket of a priority."""
        if priority == "low":
            return self.health_ticket_penalty_low
        if priority == "high":
            return self.health_ticket_penalty_high
        if priority == "urgent":
            return self.health_ticket_penalty_urgent
        return self.health_ticket_penalty_normal  # "normal" and anything unknown
