"""/stats/ and /api/stats/ on what became of the pull requests: merge rate, $ per merged PR,
median time from trigger to first PR and rounds per merged PR, for all GitHub tasks, per
workflow and per provider of the building stage, on a small set of tasks with known costs."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from dashboard import stats
from pipeline import services
from pipeline.models import Repository, Round, Task
from pipeline.workflow import default_workflow, load_workflow_text

CODEX = """\
version: 1
stages:
  - name: building
    provider: codex
    model: gpt-5-codex
  - name: pr_creation
"""


@pytest.fixture
def tasks(db, local_repository):
    """Five GitHub tasks (two workflows: the default one, building with claude; a codex one),
    a skipped one and a local repository's task, with known costs and outcomes."""
    github = Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/sample", default_branch="main")
    claude_wf, codex_wf = default_workflow(), load_workflow_text(CODEX, source=".tac/workflow.yaml")
    now = timezone.now()

    def make(number, workflow, cost, *, opened_after=None, outcome=None, repository=github, status=Task.Status.SUCCEEDED):
        triggered = now - timedelta(hours=number)
        task, _ = services.task_create(repository=repository, issue_number=number, title=f"Issue {number}", triggered_at=triggered)
        assert services.task_start(task=task, workflow=workflow, enqueue=False)
        Task.objects.filter(pk=task.pk).update(status=status, cost_usd=Decimal(cost), finished_at=now)
        if opened_after is not None:
            services.pull_opened_record(task=task, url=f"https://github.com/octo/sample/pull/{100 + number}", number=100 + number)
            Task.objects.filter(pk=task.pk).update(pr_opened_at=triggered + timedelta(seconds=opened_after))
        if outcome is not None:
            services.pull_outcome_record(task=task, number=100 + number, state="closed", merged=outcome == "merged", at=now, source="poll")
        return task

    merged = make(1, claude_wf, "0.30", opened_after=60, outcome="merged")
    make(2, claude_wf, "0.10", opened_after=120, outcome="closed")
    make(3, claude_wf, "0.20", status=Task.Status.FAILED)  # no PR: its cost counts all the same
    make(4, codex_wf, "0.50", opened_after=300, outcome="merged")
    make(5, codex_wf, "0.25", opened_after=200)  # still open
    make(6, claude_wf, "9.00", repository=local_repository)  # a local repository: no PRs, not counted
    skipped, _ = services.task_create(repository=github, issue_number=7, title="Refused")
    Task.objects.filter(pk=skipped.pk).update(status=Task.Status.SKIPPED, cost_usd=Decimal("5"))
    # Rounds on the merged PR: a review and a CI fix ran; a command and a refused trigger did not count.
    for key, kind, ran in [("review:1", Round.Kind.REVIEW, True), ("ci:abc", Round.Kind.CI_FIX, True), ("comment:2", Round.Kind.COMMAND, True), ("comment:3", Round.Kind.COMMENT, False)]:
        Round.objects.create(task=merged, kind=kind, trigger_key=key, status=Round.Status.SUCCEEDED if ran else Round.Status.REFUSED, started_at=now if ran else None)
    return claude_wf, codex_wf


def test_the_outcome_figures_per_workflow_and_per_provider(tasks):
    claude_wf, codex_wf = tasks
    figures = stats.stats_compute(days=7)
    everything = figures.pull_outcomes
    assert (everything.tasks, everything.pull_requests, everything.merged, everything.closed, everything.open) == (5, 4, 2, 1, 1)
    assert everything.merge_rate == pytest.approx(2 / 3)
    assert everything.cost_usd == Decimal("1.35") and everything.cost_per_merged_usd == Decimal("0.675")
    assert everything.median_trigger_to_first_pr_seconds == 160  # of 60, 120, 200, 300
    assert everything.rounds_per_merged == 1.0  # two rounds over two merged PRs

    default_key = f"default workflow · {claude_wf.fingerprint()[:8]}"
    by_workflow = {g.key: g for g in figures.outcomes_by_workflow}
    assert set(by_workflow) == {default_key, f".tac/workflow.yaml · {codex_wf.fingerprint()[:8]}"}
    first, second = by_workflow[default_key], by_workflow[f".tac/workflow.yaml · {codex_wf.fingerprint()[:8]}"]
    assert (first.tasks, first.merged, first.closed, first.merge_rate, first.cost_per_merged_usd) == (3, 1, 1, 0.5, Decimal("0.6"))
    assert (first.median_trigger_to_first_pr_seconds, first.rounds_per_merged) == (90, 2.0)
    assert (second.tasks, second.merged, second.open, second.merge_rate, second.cost_per_merged_usd) == (2, 1, 1, 1.0, Decimal("0.75"))
    assert (second.median_trigger_to_first_pr_seconds, second.rounds_per_merged) == (250, 0.0)

    by_provider = {g.key: (g.tasks, g.merged, g.cost_per_merged_usd) for g in figures.outcomes_by_provider}
    assert by_provider == {"claude": (3, 1, Decimal("0.6")), "codex": (2, 1, Decimal("0.75"))}


def test_the_api_and_the_page_show_them(tasks, api, client, alice):
    body = api.get("/api/stats/", {"days": 7}).json()
    assert body["pull_outcomes"] == {
        "key": "all", "tasks": 5, "pull_requests": 4, "merged": 2, "closed": 1, "open": 1, "merge_rate": pytest.approx(2 / 3),
        "cost_usd": "1.350000", "cost_per_merged_usd": "0.675000", "median_trigger_to_first_pr_seconds": 160.0, "rounds_per_merged": 1.0,
    }
    assert [g["key"] for g in body["outcomes_by_provider"]] == ["claude", "codex"]
    client.force_login(alice)
    html = client.get(reverse("dashboard:stats"), {"days": 7}).content.decode()
    assert '<table class="outcome-table" id="outcomes-provider">' in html
    assert '<td>codex</td><td class="num">2</td><td class="num">2</td><td class="num">1</td><td class="num">0</td><td class="num">1</td><td class="num">100%</td><td class="num">$0.7500</td>' in html
