"""manage.py add_repo and run_coordinator --once."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from github_standin import github_repo, standin  # noqa: F401

from pipeline.models import Repository, Task, Worker


def test_add_repo_registers_a_github_repository_and_updates_it_when_run_again(db):
    call_command("add_repo", "octo/sample", "--label", "tacx", "--max-concurrent", "3")
    repo = Repository.objects.get()
    assert (repo.kind, repo.full_name, repo.trigger_label, repo.max_concurrent_tasks) == ("github", "octo/sample", "tacx", 3)
    call_command("add_repo", "octo/sample", "--clone-url", "/srv/git/sample.git")
    repo.refresh_from_db()
    assert (repo.trigger_label, repo.max_concurrent_tasks, repo.clone_url) == ("tacx", 3, "/srv/git/sample.git")
    assert Repository.objects.count() == 1


def test_add_repo_registers_a_local_repository(db, origin_and_clone):
    _origin, clone = origin_and_clone
    call_command("add_repo", "sample", "--local", str(clone))
    repo = Repository.objects.get()
    assert (repo.kind, repo.local_path) == ("local", str(clone.resolve()))


@pytest.mark.parametrize("args", [["not a name"], ["sample", "--local", "/nonexistent"], ["octo/x", "--max-concurrent", "0"]])
def test_add_repo_refuses_bad_input(db, args):
    with pytest.raises(CommandError):
        call_command("add_repo", *args)


def test_run_coordinator_once_polls_dispatches_and_exits(github_repo, standin):  # noqa: F811
    standin.add_issue("octo/sample", number=1, labels=("rpi-auto",), labeled_by="alice")
    call_command("run_coordinator", "--once")
    assert Task.objects.get().status == Task.Status.RUNNING
    assert Worker.objects.get(kind=Worker.Kind.COORDINATOR).exited_at is not None
    assert len(standin.comments_on("octo/sample", 1)) == 1
