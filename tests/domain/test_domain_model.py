"""Stage owners, the account aggregate's JSON round trip and its copies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from domain_sim import Sim, day
from pydantic import BaseModel

from laer_domain import Account, Role, Stage, owner_for, roles_for
from laer_domain.model import ALLOWED_TRANSITIONS


def test_owners_follow_seed_002() -> None:
    assert owner_for(Stage.LAND) is Role.SALES
    assert roles_for(Stage.ADOPT) == (Role.CUSTOMER_SUCCESS, Role.SUPPORT)
    assert roles_for(Stage.EXPAND) == (Role.SALES, Role.MARKETING)
    assert owner_for(Stage.RENEW) is Role.RENEWAL_MANAGER
    assert Role.CUSTOMER_SUCCESS in roles_for(Stage.RENEW)
    assert owner_for(Stage.CHURNED) is Role.SALES


def test_transition_table() -> None:
    assert (Stage.LAND, Stage.EXPAND) not in ALLOWED_TRANSITIONS
    assert (Stage.RENEW, Stage.EXPAND) not in ALLOWED_TRANSITIONS
    assert (Stage.CHURNED, Stage.ADOPT) not in ALLOWED_TRANSITIONS
    assert all((s, Stage.CHURNED) in ALLOWED_TRANSITIONS for s in Stage if s is not Stage.CHURNED)


def _busy(sim: Sim) -> Account:
    sim.start(
        goals=[{"key": "tickets_closed", "target": "99.5"}],
        contacts=[
            {
                "email": "a@acme.test",
                "name": "Ann",
                "role": "admin",
                "channels": ["email"],
                "timezone": "America/New_York",
                "opted_out": True,
            }
        ],
    )
    sim.go_live(day(1))
    sim.active(day(2), 10)
    sim.send("usage.feature_used", day(3), {"feature": "reports", "count": 4})
    sim.send("usage.limit_reached", day(3), {"limit": "api_calls", "used": 10, "allowed": 10})
    sim.send("support.ticket_opened", day(4), {"ticket_id": "t1", "priority": "urgent"})
    sim.send("support.ticket_escalated", day(4), {"ticket_id": "t1"})
    sim.send("support.survey_response", day(5), {"kind": "nps", "score": 3})
    sim.send(
        "billing.payment_failed",
        day(6),
        {
            "invoice_id": "i2",
            "amount": 1.5,
            "currency": "EUR",
            "attempt": 1,
        },
    )
    sim.cancel(day(7), day(300), "budget")
    return sim.account()


def test_busy_account_round_trips_through_json(sim: Sim) -> None:
    account = _busy(sim)
    dumped = account.model_dump(mode="json")
    assert Account.model_validate(dumped) == account
    assert Account.model_validate_json(account.model_dump_json()) == account
    assert account.contacts[0].opted_out is True


def test_clone_shares_nothing_mutable(sim: Sim) -> None:
    account = _busy(sim)
    copy = account.clone()
    assert copy == account and copy is not account
    for name in Account.model_fields:
        value, copied = getattr(account, name), getattr(copy, name)
        if isinstance(value, list | dict):
            assert copied is not value, f"Account.clone shares {name}"
        items = value.values() if isinstance(value, dict) else value
        for item in items if isinstance(value, list | dict) else [value]:
            if isinstance(item, BaseModel):  # shared by copies: must be frozen
                assert item.model_config.get("frozen"), f"{type(item).__name__} in {name}"


def test_domain_imports_no_infrastructure() -> None:
    code = (
        "import sys, laer_domain, laer_domain.rules, laer_domain.service, laer_domain.events;"
        "bad = {m.split('.')[0] for m in sys.modules} & {'kafka', 'prefect', 'sqlalchemy'};"
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
