# ruff: noqa: F811  (pytest fixtures imported from the helpers are redefined as arguments)
"""Linear and Jira end to end, with the real claude CLI: a label applied on the tracker (its
stand-in on loopback) → webhook → task → planning, building, reviewing with Claude Code driven
by the scripted model server → the pull request on the GitHub stand-in (code in a bare
repository on disk) → the progress comment on the Linear / Jira issue, edited to "succeeded",
with the pull request linked from the issue. Each takes 40-80 s on a loaded 2-core machine (most of it the real claude CLI's stages)."""

from __future__ import annotations

import yaml
from conftest import ROOT, make_origin_and_clone
from github_standin import TOKEN, standin  # noqa: F401
from jira_helpers import deliver as jira_deliver
from jira_helpers import jira  # noqa: F401
from jira_helpers import label_delivery as jira_label
from linear_helpers import deliver as linear_deliver
from linear_helpers import label_delivery as linear_label
from linear_helpers import linear  # noqa: F401

from coordinator.loop import Coordinator
from harness.modelserver import ScriptedModelServer
from pipeline.github import GitHubClient
from pipeline.models import Repository, StageResult, Task
from pipeline.trackers.jira_api import adf_text
from tests.conftest import point_claude_at
from tests.test_coordinator_e2e import run_to_the_end


def run(monkeypatch, standin, *, tracker_kind: str, settings: dict, tmp_path, post) -> Task:  # noqa: F811
    origin, _ = make_origin_and_clone(tmp_path)  # demo/sample-repo: the default workflow applies
    Repository.objects.create(
        kind=Repository.Kind.GITHUB,
        full_name="octo/sample",
        clone_url=str(origin),
        tracker_kind=tracker_kind,
        tracker_settings=settings,
    )
    assert post().status_code == 202
    with ScriptedModelServer(yaml.safe_load((ROOT / "demo" / "script.yaml").read_text())) as server:
        point_claude_at(monkeypatch, server)
        coordinator = Coordinator(client=GitHubClient(base_url=standin.url, token=TOKEN), tick=0)
        coordinator.comments.min_edit_seconds = 0
        coordinator.run_once()
        task = Task.objects.get()
        run_to_the_end(coordinator, task)
        for _ in range(3):
            coordinator.run_once()  # the last edits of the progress comment
    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    assert StageResult.objects.filter(task=task, stage__name="planning", success=True, provider="claude").exists()
    assert StageResult.objects.filter(task=task, stage__name="building", success=True, provider="claude").exists()
    assert Task.objects.count() == 1
    assert standin.comments_on("octo/sample", task.issue_number) == [], "nothing is posted on the GitHub issue of the same number"
    return task


def test_a_linear_label_ends_as_a_pull_request_with_progress_on_the_linear_issue(
    client, db, standin, linear, tmp_path, monkeypatch
):  # noqa: F811
    issue = linear.add_issue(linear.eng, "Add a farewell", description="Please add farewell(name).")
    body, headers = linear_label(linear, issue, ("rpi-auto",), by=linear.ada)
    task = run(
        monkeypatch,
        standin,
        tracker_kind="linear",
        settings={"team": "ENG"},
        tmp_path=tmp_path,
        post=lambda: linear_deliver(client, body, headers),
    )
    assert task.tracker_issue_key == "ENG-1"
    (pull,) = standin.pulls_of("octo/sample")
    assert pull["body"].startswith(f"For Linear issue ENG-1 ({issue['url']}).") and "(ENG-1)" in pull["title"]
    (comment,) = [c for c in linear.comments.values() if c["issue_id"] == issue["id"]]
    assert "**succeeded**" in comment["body"] and pull["html_url"] in comment["body"] and len(comment["history"]) >= 3
    assert [(a["issue_id"], a["url"]) for a in linear.attachments.values()] == [(issue["id"], pull["html_url"])]
    assert linear.errors == []


def test_a_jira_label_ends_as_a_pull_request_with_progress_on_the_jira_issue(client, db, standin, jira, tmp_path, monkeypatch):  # noqa: F811
    issue = jira.add_issue(jira.ops, "Add a farewell", description="Please add farewell(name).")
    body, headers = jira_label(jira, issue, ("rpi-auto",), by=jira.dev)
    task = run(
        monkeypatch,
        standin,
        tracker_kind="jira",
        settings={"project": "OPS"},
        tmp_path=tmp_path,
        post=lambda: jira_deliver(client, body, headers),
    )
    assert (task.tracker_issue_key, task.body) == ("OPS-1", "Please add farewell(name).")
    (pull,) = standin.pulls_of("octo/sample")
    assert pull["body"].startswith(f"For Jira issue OPS-1 ({jira.url}/browse/OPS-1).")
    (comment,) = jira.comments["OPS-1"]
    text = adf_text(comment["body"])
    assert (
        comment["body"]["type"] == "doc" and "succeeded" in text and pull["html_url"] in text and f"(tacx:task:{task.pk})" in text
    )
    assert [link["object"]["url"] for link in jira.remote_links["OPS-1"]] == [pull["html_url"]]
    assert jira.errors == []
