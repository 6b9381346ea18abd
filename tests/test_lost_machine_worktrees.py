"""Issue 23 (item 2): a machine that never comes back has its TaskWorktree rows expired after
TACX_LOST_MACHINE_HOURS, so its tasks get `worktree_removed_at`; a live machine's rows stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from pipeline import services
from pipeline.models import Task, TaskWorktree, Worker


@pytest.mark.django_db
def test_worktrees_of_a_machine_gone_for_good_are_recorded_as_removed(local_repository):
    long_ago = timezone.now() - timedelta(hours=100)
    gone_only, shared = (services.task_create(repository=local_repository, issue_number=n, title=f"t{n}")[0] for n in (1, 2))
    Task.objects.filter(pk__in=[gone_only.pk, shared.pk]).update(status=Task.Status.SUCCEEDED, finished_at=long_ago)
    Worker.objects.create(kind=Worker.Kind.SLOT, name="gone:1", host="gone", heartbeat_at=long_ago)
    Worker.objects.create(kind=Worker.Kind.SLOT, name="alive:1", host="alive", heartbeat_at=timezone.now())
    for task in (gone_only, shared):
        TaskWorktree.objects.create(task=task, host="gone", path=f"/trees/{task.pk}", created_at=long_ago)
    TaskWorktree.objects.create(task=shared, host="alive", path=f"/trees/{shared.pk}", created_at=long_ago)

    assert services.worktrees_of_lost_machines_expire(lost_after_hours=200) == 0  # not gone long enough
    assert services.worktrees_of_lost_machines_expire(lost_after_hours=72) == 2
    assert not TaskWorktree.objects.filter(host="gone", removed_at__isnull=True).exists()
    assert TaskWorktree.objects.get(host="alive").removed_at is None  # its own coordinator removes it
    gone_only.refresh_from_db()
    shared.refresh_from_db()
    assert gone_only.worktree_removed_at is not None
    assert shared.worktree_removed_at is None  # the live machine still holds one
    assert services.worktrees_of_lost_machines_expire(lost_after_hours=72) == 0
