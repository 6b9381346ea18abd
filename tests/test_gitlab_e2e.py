# ruff: noqa: F811  (pytest fixtures imported from the helpers are redefined as arguments)
"""GitLab end to end with the real `claude` CLI against the scripted model server, GitLab's
REST v4 played by the stand-in on loopback and the code in a bare repository on disk:

label webhook -> task -> planning, building, reviewing (claude really edits and commits) ->
a draft merge request -> the progress note on the issue and a commit status per stage; then a
note in a thread on the MR's diff -> a round -> a new commit on the same MR and a reply in the
thread; then a failed pipeline on the new head -> a CI-fix round with the job's log tail."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import ROOT, make_origin_and_clone, point_claude_at
from gitlab_helpers import GITLAB_SECRET, PROJECT, gitlab, post  # noqa: F401
from rounds_helpers import branch_head, commits_on, drive

from coordinator import tracker_progress
from coordinator.loop import Coordinator
from coordinator.models import ProgressComment
from harness.modelserver import ScriptedModelServer
from pipeline.models import Repository, Round, StageResult, Task

pytestmark = [pytest.mark.cli, pytest.mark.slow]


def follow_up(kind: str, round_number: int, line: str, message: str) -> dict:
    return {
        "name": f"building-{kind}",
        # Only a round's building prompt starts so (its reviewing stage goes to "reviewing").
        "match": f"TACX-STAGE: building (round {round_number}) (follow-up {kind})",
        "turns": [
            {
                "text": f"Working on the {kind}.",
                "tool_calls": [
                    {"bash": f"printf '{line}\\n' >> greeter.py && git commit -qam '{message}' && git log --oneline -1"}
                ],
                "usage": {
                    "input_tokens": 900,
                    "output_tokens": 40,
                    "cache_read_input_tokens": 3000,
                    "cache_creation_input_tokens": 0,
                },
            },
            {
                "text": "Done.",
                "usage": {
                    "input_tokens": 950,
                    "output_tokens": 5,
                    "cache_read_input_tokens": 3000,
                    "cache_creation_input_tokens": 0,
                },
            },
        ],
    }


def test_gitlab_label_to_merge_request_then_a_thread_round_and_a_ci_fix_round(db, client, gitlab, tmp_path, monkeypatch):  # noqa: F811
    script = copy.deepcopy(yaml.safe_load((ROOT / "demo" / "script.yaml").read_text()))
    script["conversations"][:0] = [
        follow_up("comment", 2, "# greet_all requested in review", "Address the thread: greet_all"),
        follow_up("ci_fix", 3, "# lint fixed", "Fix the failing lint job"),
    ]
    origin, _ = make_origin_and_clone(tmp_path)  # demo/sample-repo: the default workflow (claude)
    gitlab.origins[PROJECT] = str(origin)
    Repository.objects.create(
        kind=Repository.Kind.GITLAB, full_name=PROJECT, clone_url=str(origin), forge_url=gitlab.url, trigger_label="tacx"
    )
    issue = gitlab.add_issue(PROJECT, title="Add a farewell", body="Please add farewell(name).")
    change = gitlab.label(PROJECT, issue["iid"], "tacx", actor="mo")
    assert (
        post(
            client,
            *gitlab.delivery(
                "Issue Hook", gitlab.issue_hook(PROJECT, issue["iid"], actor="mo", labels=change), secret=GITLAB_SECRET
            ),
        ).status_code
        == 202
    )

    with ScriptedModelServer(script) as server:
        point_claude_at(monkeypatch, server)
        coordinator = Coordinator(tick=0)
        drive(coordinator)
        task = Task.objects.get()
        assert task.status == Task.Status.SUCCEEDED, task.status_reason
        assert StageResult.objects.get(task=task, stage__name="building").provider == "claude"
        (mr,) = gitlab.mrs_of(PROJECT)
        assert (task.pr_number, task.pr_url) == (mr["iid"], mr["web_url"])
        assert mr["draft"] and mr["title"] == "Draft: Add a farewell (#1)" and mr["description"].startswith("Closes #1")
        assert mr["source_branch"] == task.branch and "Add farewell() and tests" in commits_on(origin, task.branch)
        first_head = branch_head(origin, task.branch)
        # One commit status per stage on the pushed head, all successful.
        finals = {s["name"]: s["status"] for s in gitlab.statuses if s["sha"] == first_head}
        assert finals == {f"TAC-X / {n}": "success" for n in ("planning", "building", "reviewing", "pr_creation")}

        # A note in a thread on the diff, addressed to TAC-X, by a developer.
        note = gitlab.add_note(
            PROJECT,
            mr["iid"],
            "@tacx add greet_all(names) here",
            author="alice",
            mr=True,
            position={
                "new_path": "greeter.py",
                "new_line": 2,
                "old_path": "greeter.py",
                "old_line": None,
                "position_type": "text",
            },
        )
        assert (
            post(client, *gitlab.delivery("Note Hook", gitlab.note_hook(PROJECT, note, mr=mr), secret=GITLAB_SECRET)).status_code
            == 202
        )
        drive(coordinator)
        round_ = Round.objects.get(task=task)
        assert round_.status == Round.Status.SUCCEEDED, round_.reason
        build = StageResult.objects.get(followup=round_, stage__name="building")
        assert "add greet_all(names) here" in build.prompt and 'path="greeter.py" line="2"' in build.prompt
        second_head = branch_head(origin, task.branch)
        assert second_head != first_head and "Address the thread: greet_all" in commits_on(origin, task.branch)
        assert len(gitlab.mrs_of(PROJECT)) == 1
        thread = [
            n
            for n in gitlab.notes_on(PROJECT, mr["iid"], mr=True)
            if n["discussion_id"] == note["discussion_id"] and n["id"] != note["id"]
        ]
        assert len(thread) == 1 and f"tacx:round:{round_.pk}" in thread[0]["body"]
        assert [(e["name"], e["awardable_id"]) for e in gitlab.emoji] == [("eyes", note["id"])]

        # A failed pipeline on the new head: a CI-fix round with the failed job's log tail.
        pipeline = gitlab.add_pipeline(
            PROJECT,
            sha=second_head,
            ref=task.branch,
            jobs=[
                {
                    "name": "lint",
                    "status": "failed",
                    "log": "ruff check .\ngreeter.py:3:1: E302 expected 2 blank lines\nFound 1 error.",
                },
                {"name": "flaky", "status": "failed", "allow_failure": True, "log": "ignored"},
                {"name": "unit", "status": "success"},
            ],
        )
        hook = gitlab.delivery("Pipeline Hook", gitlab.pipeline_hook(PROJECT, pipeline, mr=mr), secret=GITLAB_SECRET)
        assert post(client, *hook).status_code == 202
        assert post(client, *hook).content == b"duplicate"
        drive(coordinator)
        ci = Round.objects.get(task=task, kind=Round.Kind.CI_FIX)
        assert ci.status == Round.Status.SUCCEEDED, ci.reason
        assert [c["name"] for c in ci.context["checks"]] == ["lint"]
        ci_build = StageResult.objects.get(followup=ci, stage__name="building")
        assert "E302 expected 2 blank lines" in ci_build.prompt
        assert "Fix the failing lint job" in commits_on(origin, task.branch)
        for _ in range(5):  # the last edits of the progress note (edited at most once a second by default)
            tracker_progress.sync_one_tracker_comment(min_edit_seconds=0)

    # The progress note on the issue: one, edited in place, with the MR link.
    (progress,) = gitlab.notes_on(PROJECT, issue["iid"])
    assert (
        f"<!-- tacx:task:{task.pk} -->" in progress["body"]
        and mr["web_url"] in progress["body"]
        and "succeeded" in progress["body"]
    )
    assert ProgressComment.objects.get(task=task).comment_key == str(progress["id"])
