"""A step's report (its Prefect artifact) masks recipients' e-mail addresses unless asked not to."""

from __future__ import annotations

from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from sqlalchemy import select

from flows.kit.report import mask_address
from flows.kit.testing import PlaybookHarness
from persistence.tables import PlaybookStepRow
from tests.playbooks.conftest import HarnessFactory, landing


def _reports(h: PlaybookHarness, account: str) -> str:
    assert h.reporter is not None and h.reporter.flush()
    with h.sessions() as s:
        ids = [UUID(r) for r in s.scalars(select(PlaybookStepRow.task_run_id).where(
            PlaybookStepRow.account_id == account)) if r]
    assert ids
    with get_client(sync_client=True) as client:
        # by task run alone: a flow-run filter would drop artifacts of runs without a flow
        found = client._client.post("/artifacts/filter", json={
            "artifacts": {"task_run_id": {"any_": [str(i) for i in ids]}}, "limit": 50,
        }).json()
    return "\n".join(str(a["data"]) for a in found)


@pytest.mark.parametrize("show", [False, True])
def test_reports_mask_recipients_unless_shown(show: bool, unique: str,
                                              harness: HarnessFactory) -> None:
    acc = f"private-{unique}"
    env = {"LAER_PLAYBOOK_SHOW_RECIPIENTS": "true"} if show else {}
    h = harness(LAER_PLAYBOOK_DAY_SECONDS="86400", **env)
    h.feed(landing(acc))
    h.run("onboarding", horizon_s=0)
    markdown = _reports(h, acc)
    assert "Welcome aboard" in markdown  # the report lists the message
    address = f"buyer@{acc}.example"
    if show:
        assert address in markdown
    else:
        assert address not in markdown and f"b***@{acc}.example" in markdown


def test_mask_address() -> None:
    assert mask_address("jane.doe@example.com") == "j***@example.com"
    assert mask_address("customer_success") == "customer_success"
    assert mask_address(None) is None
