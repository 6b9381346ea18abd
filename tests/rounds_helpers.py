"""Shared by the round tests: a task that has already opened its pull request on the stand-in
(real git: a bare origin, real worktrees, command-provider agents), and a driver that plays
the coordinator and the django-q2 workers in turn."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from github_standin import TOKEN, sign

from coordinator.loop import Coordinator
from pipeline import attempt
from pipeline.github import GitHubClient
from pipeline.models import Round, Stage, Task

# The builder appends a line per run (so every round adds a commit) and keeps its prompt in
# the commit message's body: what the agent was told is visible in git as well.
BUILDER = (
    "import pathlib, subprocess, sys\n"
    "p = pathlib.Path('CHANGES.md')\n"
    "old = p.read_text() if p.exists() else ''\n"
    "p.write_text(old + f'change {len(old.splitlines()) + 1}\\n')\n"
    "print('built')\n"
)


APPROVER = "print('Looks good.'); print('VERDICT: APPROVE')"


def rounds_workflow(*, extra: str = "", builder: str = BUILDER, reviewer: str = APPROVER) -> str:
    stages = {
        "planning": "import pathlib; pathlib.Path('plan.md').write_text('# Plan\\n\\nAdd CHANGES.md.\\n'); print('plan written')",
        "building": builder,
        "reviewing": reviewer,
    }
    lines = ["version: 1", *extra.strip().splitlines(), "stages:"]
    for name, script in stages.items():
        lines += [
            f"  - name: {name}",
            "    provider: command",
            "    timeout: 60",
            "    max_attempts: 2",
            "    options:",
            f"      argv: {json.dumps([sys.executable, '-c', script, '{prompt}'])}",
        ]
    lines.append("  - name: pr_creation")
    return "\n".join(lines) + "\n"


def coordinator_for(standin) -> Coordinator:
    coordinator = Coordinator(client=GitHubClient(base_url=standin.url, token=TOKEN), tick=0)
    coordinator.comments.min_edit_seconds = 0
    return coordinator


def drive(coordinator: Coordinator, *, limit: int = 40) -> None:
    """Coordinator cycles and stage jobs until nothing is queued or running and every
    finished round has been answered."""
    for _ in range(limit):
        coordinator.run_once()
        stage = Stage.objects.filter(status=Stage.Status.QUEUED).order_by("task_id", "position").first()
        if stage is not None:
            attempt.run_stage(stage.pk, enqueue_next=False)
            continue
        busy = Task.objects.filter(status=Task.Status.RUNNING).exists() or Round.objects.filter(status__in=Round.OPEN).exists()
        unanswered = Round.objects.filter(replied_at__isnull=True, context__has_key="reply_to").exclude(status__in=Round.OPEN).exists()
        if not busy and not unanswered:
            coordinator.run_once()
            return
    raise AssertionError("the rounds did not settle")


def deliver(client, standin, kind: str, *, delivery: str, sender: str, **fields):
    body = standin.webhook(kind, "octo/sample", sender=sender, **fields)
    return post(client, kind.split(".")[0], body, delivery=delivery)


def post(client, event: str, body: bytes, *, delivery: str):
    return client.post(
        "/webhooks/github",
        data=body,
        content_type="application/json",
        HTTP_X_GITHUB_EVENT=event,
        HTTP_X_GITHUB_DELIVERY=delivery,
        HTTP_X_HUB_SIGNATURE_256=sign(body),
    )


def branch_head(origin, branch: str) -> str:
    return subprocess.run(["git", "rev-parse", f"refs/heads/{branch}"], cwd=origin, capture_output=True, text=True, check=True).stdout.strip()


def commits_on(origin, branch: str, base: str = "main") -> list[str]:
    out = subprocess.run(["git", "log", "--format=%s", f"{base}..{branch}"], cwd=origin, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@pytest.fixture
def make_repo(db, standin, tmp_path):
    """octo/sample with a bare origin (the stand-in reads PR heads from it) and a workflow."""
    from conftest import make_origin_and_clone

    from pipeline.models import Repository

    def make(extra: str = "", builder: str = BUILDER, reviewer: str = APPROVER) -> Repository:
        files = {
            "README.md": "# sample\n",
            "greeter.py": "def greet(name):\n    return 'Hello ' + name\n",
            ".tac/workflow.yaml": rounds_workflow(extra=extra, builder=builder, reviewer=reviewer),
        }
        origin, _ = make_origin_and_clone(tmp_path, "sample", files)
        standin.repos["octo/sample"].origin = str(origin)
        return Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url=str(origin), default_branch="main")

    return make


def task_with_pull_request(standin, coordinator: Coordinator, *, number: int = 12, labels: tuple[str, ...] = ("rpi-auto",)) -> Task:
    standin.add_issue("octo/sample", number=number, title="Add a changelog", body="We need CHANGES.md.", labels=labels, labeled_by="alice")
    drive(coordinator)
    task = Task.objects.get(issue_number=number)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert task.pr_number
    return task
