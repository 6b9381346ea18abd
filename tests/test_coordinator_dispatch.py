"""Dispatch: oldest first, within the global and per-repository limits; budgets hold tasks."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from conftest import make_origin_and_clone
from github_standin import command_workflow

from coordinator.dispatch import Dispatcher
from pipeline import services
from pipeline.models import Repository, Stage, StageResult, Task


def local_repo(tmp_path, name: str, *, max_concurrent: int = 2) -> Repository:
    _origin, clone = make_origin_and_clone(tmp_path, name, {"README.md": "x\n", ".tac/workflow.yaml": command_workflow()})
    return Repository.objects.create(kind=Repository.Kind.LOCAL, full_name=name, local_path=str(clone), max_concurrent_tasks=max_concurrent)


def queue(repository: Repository, number: int, *, age_minutes: int = 0) -> Task:
    task, _ = services.task_create(repository=repository, issue_number=number, title=f"issue {number}")
    Task.objects.filter(pk=task.pk).update(created_at=task.created_at - timedelta(minutes=age_minutes))
    return task


def drain(dispatcher: Dispatcher) -> None:
    for _ in range(50):
        if not dispatcher.dispatch_one_task():
            return


def running() -> set[tuple[str, int]]:
    return set(Task.objects.filter(status=Task.Status.RUNNING).values_list("repository__full_name", "issue_number"))


@pytest.fixture
def repos(db, tmp_path, settings):
    settings.TACX = {**settings.TACX, "MAX_CONCURRENT_TASKS": 3}
    return local_repo(tmp_path, "alpha", max_concurrent=2), local_repo(tmp_path, "beta", max_concurrent=2)


def test_it_starts_the_oldest_queued_tasks_within_the_limits(repos):
    alpha, beta = repos
    queue(alpha, 1, age_minutes=50)
    queue(alpha, 2, age_minutes=40)
    queue(alpha, 3, age_minutes=30)  # alpha's limit is 2
    queue(beta, 4, age_minutes=20)
    queue(beta, 5, age_minutes=10)  # the global limit of 3 is reached before this one
    drain(Dispatcher())
    assert running() == {("alpha", 1), ("alpha", 2), ("beta", 4)}
    started = Task.objects.get(issue_number=1)
    stage = started.stages.get(position=0)
    assert (stage.name, stage.status) == ("planning", Stage.Status.QUEUED)


def test_a_finished_task_frees_its_slot_for_the_next_oldest(repos):
    alpha, _beta = repos
    for n in range(1, 5):
        queue(alpha, n, age_minutes=10 - n)
    dispatcher = Dispatcher()
    drain(dispatcher)
    assert running() == {("alpha", 1), ("alpha", 2)}
    services.task_fail(task=Task.objects.get(issue_number=1), reason="done")
    drain(dispatcher)
    assert running() == {("alpha", 2), ("alpha", 3)}


def test_a_disabled_repository_starts_nothing(repos):
    alpha, _ = repos
    Repository.objects.filter(pk=alpha.pk).update(enabled=False)
    queue(alpha, 1)
    drain(Dispatcher())
    assert running() == set()


def test_an_invalid_workflow_fails_the_task_with_the_reason(db, tmp_path):
    _origin, clone = make_origin_and_clone(tmp_path, "broken", {"README.md": "x\n", ".tac/workflow.yaml": "stages: 7\n"})
    repo = Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="broken", local_path=str(clone))
    task = queue(repo, 1)
    drain(Dispatcher())
    task.refresh_from_db()
    assert task.status == Task.Status.FAILED and "stages" in task.status_reason


def spend(repository: Repository, usd: str) -> None:
    task = queue(repository, 99)
    stage = Stage.objects.create(task=task, name="planning", position=0, provider="command")
    StageResult.objects.create(stage=stage, task=task, attempt=1, outcome="succeeded", cost_usd=Decimal(usd))
    services.task_fail(task=task, reason="spent")


def test_a_used_up_daily_budget_holds_tasks_waiting_and_releases_them_later(repos):
    alpha, beta = repos
    Repository.objects.filter(pk=alpha.pk).update(daily_budget_usd=Decimal("1.00"))
    alpha.refresh_from_db()
    spend(alpha, "1.50")
    held = queue(alpha, 1, age_minutes=5)
    other = queue(beta, 2)
    dispatcher = Dispatcher(waiting_recheck=0)
    drain(dispatcher)
    held.refresh_from_db()
    assert held.status == Task.Status.WAITING and "repository daily budget" in held.status_reason
    assert running() == {("beta", 2)}  # the other repository is not held back
    drain(dispatcher)
    assert held.events.filter(data__message__startswith="waiting").count() == 1  # no event spam

    Repository.objects.filter(pk=alpha.pk).update(daily_budget_usd=Decimal("5.00"))
    drain(dispatcher)
    held.refresh_from_db()
    assert held.status == Task.Status.RUNNING and held.status_reason == ""
    other.refresh_from_db()


def test_a_waiting_task_is_rechecked_only_now_and_then(repos):
    alpha, _ = repos
    Repository.objects.filter(pk=alpha.pk).update(daily_budget_usd=Decimal("1.00"))
    spend(alpha, "2")
    queue(alpha, 1)
    dispatcher = Dispatcher(waiting_recheck=3600)
    drain(dispatcher)
    Repository.objects.filter(pk=alpha.pk).update(daily_budget_usd=None)
    drain(dispatcher)
    assert Task.objects.get(issue_number=1).status == Task.Status.WAITING


def test_two_dispatchers_never_exceed_the_limit(repos, settings):
    settings.TACX = {**settings.TACX, "MAX_CONCURRENT_TASKS": 1}
    alpha, beta = repos
    queue(alpha, 1, age_minutes=2)
    queue(beta, 2, age_minutes=1)
    first, second = Dispatcher(), Dispatcher()
    # Both have looked at the counts (0 running) before either starts one.
    candidate = Task.objects.get(issue_number=1)
    assert first.start(candidate)
    assert second.start(Task.objects.get(issue_number=2)) is False
    assert running() == {("alpha", 1)}
