"""Rounds from GitLab merge requests, like GitHub's (`coordinator.conversation`):

- a note on a task's MR addressed to TAC-X (`@tacx ...` or `/tacx <command>`) is a comment
  round or a command; a note in a thread on the diff (a discussion with a position) carries
  its path and line into the prompt as an inline comment, and the reply goes into that thread;
- a failed pipeline on the MR's current head is one CI-fix round per head commit, with the
  failed jobs (not `allow_failure`) and the end of each job's log.

Same safety rules: writers only (Developer or higher), bots ignored, TAC-X's own notes (its
marker) never trigger, the text is the webhook's at posting time (edits are ignored), one round
per note id / head commit (`Round.trigger_key`), bounds and budgets from `services.rounds`.
"""

from __future__ import annotations

from pipeline.gitlab_api import GitLabClient
from pipeline.models import Repository, Round, Task
from pipeline.services import rounds
from pipeline.trackers import Tracker, TrackerEvent

from . import conversation
from .lookups import task_for_pull

OWN_STATUS_PREFIX = "TAC-X /"


def event_act(tracker: Tracker, repository: Repository, event: TrackerEvent, source: str) -> tuple[Task | None, str]:
    if event.action == "pipeline":
        return pipeline_failed(repository, event, source)
    return mr_note(tracker, repository, event, source)


def mr_note(tracker: Tracker, repository: Repository, event: TrackerEvent, source: str) -> tuple[Task | None, str]:
    d = event.detail
    mr = int(d["mr"])
    task = task_for_pull(repository, mr)
    if task is None:
        return None, "ignored: not a TAC-X merge request"
    extra: dict = {"react": {"comment_id": d["id"], "mr": mr}}
    if d.get("discussion_id"):
        extra["discussion_id"] = d["discussion_id"]
    if position := d.get("position"):
        extra["inline_comments"] = [
            {
                "id": d["id"],
                "path": position.get("path", ""),
                "line": position.get("line"),
                "body": d.get("body", ""),
                "author": event.actor.login,
            }
        ]
    comment = {
        "id": d["id"],
        "user": event.actor.login,
        "user_type": event.actor.type,
        "body": d.get("body", ""),
        "created_at": event.at,
        "html_url": d.get("url", ""),
    }
    what = conversation.comment_handle(
        tracker, task=task, comment=comment, reply_to=mr, source=source, frozen=True, extra_context=extra
    )
    return task, what


def pipeline_failed(repository: Repository, event: TrackerEvent, source: str) -> tuple[Task | None, str]:
    d = event.detail
    task = task_for_pull(repository, int(d.get("mr") or 0))
    if task is None:
        return None, "ignored: not a TAC-X merge request"
    sha = str(d.get("sha") or "")
    key = f"ci:{sha}"
    if Round.objects.filter(task=task, trigger_key=key).exists():
        return task, "duplicate: a CI-fix round for this commit exists"
    client = GitLabClient(base_url=repository.forge_url, timeout=10.0)
    head = str(client.merge_request(repository.full_name, int(task.pr_number or 0)).get("sha") or "")
    if head and head != sha:
        return task, f"ignored: {sha[:7]} is no longer the head of the merge request ({head[:7]})"
    if task.status in Task.ACTIVE:
        return task, "ignored: the task is running; its next push gets a new pipeline"
    failing = []
    for job in client.pipeline_jobs(repository.full_name, int(d["pipeline_id"])):
        if job.get("status") != "failed" or job.get("allow_failure") or str(job.get("name") or "").startswith(OWN_STATUS_PREFIX):
            continue
        failing.append(
            {
                "name": str(job.get("name") or ""),
                "conclusion": str(job.get("failure_reason") or "failed"),
                "url": str(job.get("web_url") or ""),
                "summary": f"stage {job.get('stage', '')}",
                "log_tail": client.job_log_tail(repository.full_name, int(job["id"])),
            }
        )
    if not failing:
        return task, "ignored: no failed job in the pipeline"
    round_, created = rounds.round_record(
        task=task,
        kind=Round.Kind.CI_FIX,
        trigger_key=key,
        actor="ci",
        source=source,
        context={"reply_to": task.pr_number, "checks": failing},
        head_sha=sha,
    )
    if not created:
        return task, "duplicate: a CI-fix round for this commit exists"
    return task, f"round {round_.pk} {round_.status}" + (f": {round_.reason}" if round_.reason else "")
