"""Hostile workflow files fail their task at once, with a message, without holding dispatch.

Issue 9 (items 3 and 4): values that escaped the validator (NaN budget, a 21-digit attempt
limit, non-UTF-8 bytes, nesting 20,000 deep) left the task queued and retried forever; a
545-byte alias bomb hung the dispatcher inside the dispatch lock; 50 MB files were accepted and
snapshotted into the task.
"""

from __future__ import annotations

import pytest
from conftest import git, make_origin_and_clone

from coordinator.dispatch import Dispatcher
from pipeline import services, workflow
from pipeline.models import Repository, Task

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
) + "stages: *i\n"

HOSTILE = {
    "nan budget": ("budget: {usd: .nan}\n", "budget.usd: must be a finite number"),
    "infinite budget": ("budget: {usd: .inf}\n", "budget.usd: must be a finite number"),
    "huge attempt limit": ("stages:\n  - {name: planning, max_attempts: 100000000000000000000}\n", "max_attempts: must be <= 100"),
    "too many digits": ("review_rounds: " + "9" * 5000 + "\n", "cannot be used"),
    "huge timeout": ("stages:\n  - {name: planning, timeout: 99999999999}\n", "timeout: must be <= 2147483647"),
    "deep nesting": ("stages: " + "[" * 20000 + "]" * 20000 + "\n", "nested deeper than 32 levels"),
    "deep mapping": ("stages:\n  - {name: planning, options: " + "{a: " * 5000 + "1" + "}" * 5000 + "}\n", "nested deeper"),
    "alias bomb": (ALIAS_BOMB, "aliases (*name) are not allowed"),
    "oversized file": ("# " + "x" * (65536 + 10) + "\n", "the limit is 65536"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_file_raises_a_workflow_error_naming_the_problem(name):
    text, expected = HOSTILE[name]
    with pytest.raises(workflow.WorkflowError) as caught:
        workflow.load_workflow_text(text)
    assert expected in str(caught.value)
    assert str(caught.value).startswith(".tac/workflow.yaml: ")


def test_non_utf8_bytes_raise_a_workflow_error():
    with pytest.raises(workflow.WorkflowError, match="not UTF-8"):
        workflow.load_workflow_text(b"stages:\n  - name: plann\xffing\n")


def test_the_alias_bomb_is_refused_quickly_enough_to_stay_small():
    # Before the fix this document expands to 10^9 leaves; refusing the first alias keeps the
    # work proportional to the 1 KB read.
    assert len(ALIAS_BOMB) < 1000
    with pytest.raises(workflow.WorkflowError):
        workflow.load_workflow_text(ALIAS_BOMB)


def test_plain_anchors_without_aliases_and_ordinary_files_still_load():
    wf = workflow.load_workflow_text("review_rounds: 3\nbudget: &b {usd: 2.5}\n")
    assert wf.review_rounds == 3 and str(wf.budget.usd) == "2.5"


def repository_with(tmp_path, content: bytes) -> Repository:
    _origin, clone = make_origin_and_clone(tmp_path, "hostile", {"README.md": "x\n"})
    (clone / ".tac").mkdir()
    (clone / ".tac" / "workflow.yaml").write_bytes(content)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "hostile workflow")
    return Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="hostile", local_path=str(clone))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "content, expected",
    [
        (b"budget: {usd: .nan}\n", "must be a finite number"),
        (b"stages:\n  - name: plann\xffing\n", "not UTF-8"),
        (b"stages: " + b"[" * 20000 + b"]" * 20000 + b"\n", "nested deeper"),
        (b"stages:\n  - {name: planning, max_attempts: 100000000000000000000}\n", "must be <= 100"),
        (ALIAS_BOMB.encode(), "aliases"),
        (b"# " + b"x" * 1_000_000 + b"\n", "the limit is 65536"),
    ],
    ids=["nan", "non-utf8", "nesting", "overflow", "alias-bomb", "one-megabyte"],
)
def test_the_dispatcher_fails_the_task_at_once_outside_the_dispatch_lock(tmp_path, monkeypatch, content, expected):
    from django.db import connection

    repository = repository_with(tmp_path, content)
    task, _ = services.task_create(repository=repository, issue_number=1, title="hostile")
    seen_in_transaction = []
    read = services.task_workflow_read

    def spy(**kwargs):
        seen_in_transaction.append(connection.in_atomic_block)
        return read(**kwargs)

    monkeypatch.setattr(services, "task_workflow_read", spy)
    dispatcher = Dispatcher()
    assert dispatcher.dispatch_one_task()
    task.refresh_from_db()
    assert task.status == Task.Status.FAILED
    assert task.status_reason.startswith("invalid workflow: .tac/workflow.yaml: ") and expected in task.status_reason
    assert task.workflow == {} and not task.stages.exists()
    assert seen_in_transaction == [False]  # parsed before the dispatch lock was taken
    assert not dispatcher.dispatch_one_task()  # nothing left to retry
