"""A run's report (its Prefect artifact) masks recipients' e-mail addresses unless asked not to."""

from __future__ import annotations

from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    TaskRunFilter,
)
from prefect.client.schemas.sorting import ArtifactSort
from sqlalchemy import select

from flows.kit.report import mask_address
from persistence.tables import PlaybookRunRow
from tests.playbooks.conftest import HarnessFactory, landing


def _reports(h: object, account: str) -> str:
    with h.sessions() as s:  # type: ignore[attr-defined]
        ids = [UUID(r) for r in s.scalars(select(PlaybookRunRow.flow_run_id).where(
            PlaybookRunRow.account_id == account)) if r]
    with get_client(sync_client=True) as client:
        # this Prefect's sync client sends None for whatever is not given, which the API refuses
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)),
            flow_run_filter=FlowRunFilter(), task_run_filter=TaskRunFilter(), limit=50,
            offset=0, sort=ArtifactSort.CREATED_DESC)
    return "\n".join(str(a.data) for a in found)


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
