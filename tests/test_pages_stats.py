"""The Stats page's rate tables add up: every ended attempt is in one row of each table, as
succeeded, failed or cancelled, with a total; attempts that ran no model say so instead of
"(none)"."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from dashboard import stats
from harness import fake_runner
from pipeline.models import StageResult

pytestmark = pytest.mark.django_db


@pytest.fixture
def attempts(local_repository):
    """planning succeeded (claude); building failed, then cancelled (command, no model);
    pr_creation succeeded (tacx, no model); one more building attempt still running."""
    task = fake_runner.task_running(repository=local_repository, issue_number=9)
    fake_runner.attempt_finish(fake_runner.stage_claim(task, "planning"), output_text="# Plan")
    failed = fake_runner.stage_claim(task, "building")
    fake_runner.attempt_finish(failed, success=False, error="exit 1", retry=True)
    cancelled = fake_runner.stage_claim(task, "building")
    StageResult.objects.filter(pk=cancelled.pk).update(outcome=StageResult.Outcome.CANCELLED, completed_at=timezone.now())
    StageResult.objects.filter(stage__name="building").update(provider="command", model="")
    other = fake_runner.task_running(repository=local_repository, issue_number=10)
    pr = fake_runner.stage_claim(other, "planning")
    fake_runner.attempt_finish(pr)
    StageResult.objects.filter(pk=pr.pk).update(provider="tacx", model="")
    fake_runner.stage_claim(other, "building")  # running: not ended, in no table
    return task


def cells(html: str, table: str) -> dict[str, list[str]]:
    body = html[html.index(f'id="rates-{table}"') :]
    body = body[: body.index("</table>")]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    out = {}
    for row in rows[1:]:
        values = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
        out[values[0]] = values[1:]
    return out


def test_each_table_adds_up_with_cancels_and_has_a_total(client, alice, attempts):
    client.force_login(alice)
    html = client.get(reverse("dashboard:stats")).content.decode()
    by_stage = cells(html, "stage")
    #                          ended succeeded failed cancelled rate
    assert by_stage["planning"] == ["2", "2", "0", "0", "100%"]
    assert by_stage["building"] == ["2", "0", "1", "1", "0%"]
    assert by_stage["total"] == ["4", "2", "1", "1", "67%"]
    for table in ("provider", "model"):
        assert cells(html, table)["total"] == by_stage["total"], table
    for row in by_stage.values():
        assert int(row[0]) == int(row[1]) + int(row[2]) + int(row[3])


def test_attempts_without_a_model_are_named_by_their_providers(client, alice, attempts):
    client.force_login(alice)
    html = client.get(reverse("dashboard:stats")).content.decode()
    by_model = cells(html, "model")
    assert by_model["no model (command, tacx)"] == ["3", "1", "1", "1", "50%"]
    assert "<td>(none)</td>" not in html


def test_the_api_gives_the_same_figures(client, alice, attempts):
    figures = stats.stats_compute(days=1)
    building = next(r for r in figures.by_stage if r.key == "building")
    assert (building.attempts, building.succeeded, building.failed, building.cancelled, building.ended) == (1, 0, 1, 1, 2)
    client.force_login(alice)
    api = client.get("/api/stats/", {"days": 1}).json()
    model = next(r for r in api["by_model"] if r["key"] == "(none)")
    assert model["label"] == "no model (command, tacx)" and model["ended"] == 3 and model["failed"] == 1
