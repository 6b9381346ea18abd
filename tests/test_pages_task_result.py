"""The result panel of a finished task: for a local repository the branch, the origin it was
pushed to, its commits and files, and a git command that really shows the change; for GitHub the
pull request link. The task list shows the same in its PR column."""

from __future__ import annotations

import subprocess

import pytest
from django.urls import reverse

from dashboard import selectors, stats
from harness import fake_runner
from pipeline.models import Repository, Task
from tests.test_runner_processes import command_stage, commit_workflow, run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def finished_task(local_repository, origin_and_clone) -> Task:
    _, clone = origin_and_clone
    commit_workflow(
        clone,
        [command_stage("planning", "plan"), command_stage("building", "build"), command_stage("reviewing", "review"), {"name": "pr_creation"}],
    )
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    return task


def test_a_local_task_shows_its_branch_origin_commits_files_and_a_working_command(browser, finished_task, origin_and_clone, tmp_path):
    origin, _ = origin_and_clone
    result = selectors.task_result(finished_task)
    assert result.kind == "branch" and result.branch == finished_task.branch
    assert result.origin == str(origin)
    assert "greeter.py" in result.files
    assert result.commits and all(len(c.sha) >= 7 for c in result.commits)

    html = browser.get(reverse("dashboard:task-summary", args=[finished_task.pk])).content.decode()
    assert 'id="result"' in html and "Branch pushed" in html
    assert f'<code id="result-branch">{finished_task.branch}</code>' in html
    assert f'<code id="result-origin">{origin}</code>' in html
    assert result.commits[0].subject in html
    assert "<dt>Result</dt><dd>branch pushed to origin</dd>" in html

    # The command shown is the one a person pastes: run it in a fresh clone of the origin.
    elsewhere = tmp_path / "elsewhere"
    subprocess.run(["git", "clone", "-q", str(origin), str(elsewhere)], check=True)
    shown = subprocess.run(result.command, shell=True, cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert "greeter.py" in shown and "+" in shown

    rows = browser.get(reverse("dashboard:task-rows")).content.decode()
    assert f'<code class="branch">{finished_task.branch}</code>' in rows


def test_a_github_task_shows_its_pull_request_link(browser, local_repository):
    from harness import fake_runner

    task = fake_runner.task_running(repository=local_repository, issue_number=4)
    for name in ("planning", "building", "reviewing", "pr_creation"):
        fake_runner.attempt_finish(fake_runner.stage_claim(task, name), output_text="ok", verdict="APPROVE" if name == "reviewing" else "")
    Task.objects.filter(pk=task.pk).update(pr_url="https://github.com/octo/repo/pull/12", pr_number=12)
    html = browser.get(reverse("dashboard:task-summary", args=[task.pk])).content.decode()
    assert 'id="result-pr-link"' in html and "#12 · https://github.com/octo/repo/pull/12" in html
    assert "Draft pull request" in html  # opened as a draft (the default)


def test_an_unfinished_task_has_no_result_panel(browser, local_repository):
    from harness import fake_runner

    task = fake_runner.task_running(repository=local_repository, issue_number=5)
    html = browser.get(reverse("dashboard:task-summary", args=[task.pk])).content.decode()
    assert 'id="result"' not in html


def test_a_publish_none_task_that_pushed_its_branch_shows_the_result_and_counts_in_stats(browser, local_repository, origin_and_clone):
    """Issue 22: planning/building/reviewing and no pr_creation ended "Result: none" although the
    branch was pushed. With `publish: none` the panel shows the pushed branch and /stats/ counts it."""
    _, clone = origin_and_clone
    commit_workflow(clone, [command_stage("planning", "plan"), command_stage("building", "build"), command_stage("reviewing", "review")])
    assert "publish: none" in (clone / ".tac" / "workflow.yaml").read_text()
    task = run(local_repository)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert not task.results.filter(stage__name="pr_creation").exists()
    assert selectors.branch_pushed(task)

    result = selectors.task_result(task)
    assert result.kind == "branch" and "greeter.py" in result.files
    html = browser.get(reverse("dashboard:task-summary", args=[task.pk])).content.decode()
    assert 'id="result"' in html and "<dt>Result</dt><dd>branch pushed to origin</dd>" in html
    figures = stats.stats_compute(days=30)
    assert (figures.results, figures.branches, figures.pull_requests) == (1, 1, 0)


def test_a_github_branch_pushed_without_a_pull_request_shows_where_it_is(browser):
    repo = Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/nopr", clone_url="https://github.com/octo/nopr.git")
    task = fake_runner.task_running(repository=repo, issue_number=6)
    Task.objects.filter(pk=task.pk).update(branch="tacx/6-x", base_commit="a" * 40, head_commit="b" * 40, status=Task.Status.SUCCEEDED)
    html = browser.get(reverse("dashboard:task-summary", args=[task.pk])).content.decode()
    assert 'id="result"' in html and '<code id="result-origin">https://github.com/octo/nopr.git</code>' in html
    assert "git fetch https://github.com/octo/nopr.git tacx/6-x &amp;&amp; git diff aaaaaaaaaaaa...FETCH_HEAD" in html
    # Nothing pushed (head still at the base): no panel.
    Task.objects.filter(pk=task.pk).update(head_commit="a" * 40)
    assert 'id="result"' not in browser.get(reverse("dashboard:task-summary", args=[task.pk])).content.decode()
