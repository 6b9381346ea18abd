"""End to end with the real `claude` CLI against the scripted model server: a looping agent
reaches its stage's $ budget with `on_exceed: pause`; the task pauses with the work committed and
pushed and asks on the issue; a reader's `/tacx budget` is refused with a reply that says why; a
writer's `/tacx budget +2.00` resumes the very Claude Code session where it stopped
(`claude --resume`), and the task finishes with its pull request."""

from __future__ import annotations

import pytest
import yaml
from conftest import git, make_origin_and_clone, point_claude_at
from github_standin import standin  # noqa: F401
from rounds_helpers import coordinator_for, deliver, drive

from harness.modelserver import ScriptedModelServer
from pipeline.lib.pricing import cost_for
from pipeline.models import BudgetPause, Repository, Round, StageResult, Task
from pipeline.providers import Usage

pytestmark = [pytest.mark.cli, pytest.mark.slow]

MODEL = "claude-sonnet-4-5"
TURN = {"input_tokens": 100_000, "output_tokens": 10_000}  # $0.45 a turn
TURN_COST = cost_for(MODEL, Usage(input_tokens=100_000, output_tokens=10_000))
SCRIPT = {
    "conversations": [
        {
            # A resumed session's request carries the old conversation and then the new prompt,
            # which only the continuation after a pause starts with; its turns count from 0.
            "name": "continued",
            "match": "TACX-STAGE: building (continued after a budget pause)",
            "turns": [
                {"text": "Going on with step three.", "tool_calls": [{"bash": "echo three > three.txt"}], "usage": TURN},
                {"text": "Step four.", "tool_calls": [{"bash": "echo four > four.txt"}], "usage": TURN},
                {"text": "All four files are written.", "usage": {"input_tokens": 1000, "output_tokens": 20}},
            ],
        },
        {
            "name": "building",
            "match": "TACX-STAGE: building",
            "turns": [
                {"text": "Step one.", "tool_calls": [{"bash": "echo one > one.txt"}], "usage": TURN, "delay": 0.1},
                {"text": "Step two.", "tool_calls": [{"bash": "echo two > two.txt"}], "usage": TURN, "delay": 0.1},
                # Turn 3's input alone takes the stage to $1.20: killed while this streams.
                {"text": "Step three.", "tool_calls": [{"bash": "echo three > three.txt"}], "usage": TURN, "stream_delay": 0.2},
                {"text": "Step four.", "tool_calls": [{"bash": "echo four > four.txt"}], "usage": TURN},
                {"text": "All four files are written.", "usage": {"input_tokens": 1000, "output_tokens": 20}},
            ],
        }
    ]
}
WORKFLOW = {"stages": [{"name": "building", "model": MODEL, "budget": {"usd": 1.00, "on_exceed": "pause"}}, {"name": "pr_creation"}]}


def say(client, standin, number: int, body: str, *, author: str):  # noqa: F811
    c = standin.add_comment("octo/sample", number, body, author=author)
    assert deliver(client, standin, "issue_comment.created", delivery=f"c-{c['id']}", sender=author, number=number, comment_id=c["id"]).status_code == 202


def test_a_looping_claude_pauses_at_its_budget_and_a_raise_resumes_its_session_to_the_end(db, client, standin, tmp_path, monkeypatch):  # noqa: F811
    files = {"README.md": "# sample\n", ".tac/workflow.yaml": yaml.safe_dump(WORKFLOW)}
    origin, _ = make_origin_and_clone(tmp_path, "sample", files)
    standin.repos["octo/sample"].origin = str(origin)
    Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url=str(origin))
    standin.add_issue("octo/sample", number=31, title="Write four files", body="one.txt to four.txt", labels=("rpi-auto",), labeled_by="mo")
    with ScriptedModelServer(SCRIPT) as server:
        point_claude_at(monkeypatch, server)
        coordinator = coordinator_for(standin)
        drive(coordinator)

        task = Task.objects.get()
        assert task.status == Task.Status.PAUSED, task.status_reason
        stopped = StageResult.objects.get(task=task)
        assert stopped.outcome == "budget_exceeded" and stopped.session_id
        assert 1 <= stopped.cost_usd < 1 + TURN_COST, stopped.cost_usd
        # The work so far is on the branch; the third command never ran.
        assert git(origin, "show", f"{task.branch}:one.txt") == "one" and git(origin, "show", f"{task.branch}:two.txt") == "two"
        assert "three.txt" not in git(origin, "ls-tree", "--name-only", task.branch)
        pause = BudgetPause.objects.get(task=task, status="waiting")
        assert pause.spent_usd == stopped.cost_usd and pause.limit_usd == 1
        assert any(f"tacx:pause:{pause.pk}" in c["body"] for c in standin.comments_on("octo/sample", 31))
        requests_before = len(server.requests)

        say(client, standin, 31, "/tacx budget +2.00", author="rita")
        drive(coordinator)
        refused = Round.objects.get(task=task, kind=Round.Kind.COMMAND)
        assert refused.status == Round.Status.REFUSED
        (reply,) = [c["body"] for c in standin.comments_on("octo/sample", 31) if f"tacx:round:{refused.pk}" in c["body"]]
        assert "`/tacx budget` is refused: rita has read access" in reply
        assert Task.objects.get(pk=task.pk).status == Task.Status.PAUSED and len(server.requests) == requests_before

        say(client, standin, 31, "/tacx budget +2.00", author="alice")
        drive(coordinator)

    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    resumed = StageResult.objects.get(task=task, stage__name="building", attempt=2)
    # Claude Code went on in the same session (it keeps the id of a session it resumes) and was
    # given only the note: the stage's prompt and its first steps are in the session.
    assert resumed.success and resumed.resumed_session_id == stopped.session_id == resumed.session_id
    assert resumed.prompt.startswith("TACX-STAGE: building (continued after a budget pause)")
    assert "raised the limit by $2.00" in resumed.prompt and "Issue title" not in resumed.prompt
    assert [(r["conversation"], r["turn"]) for r in server.requests[requests_before:] if not r["auxiliary"]] == [("continued", 0), ("continued", 1), ("continued", 2)]
    assert resumed.cost_usd == 2 * TURN_COST + cost_for(MODEL, Usage(input_tokens=1000, output_tokens=20))
    for name, text in (("one.txt", "one"), ("two.txt", "two"), ("three.txt", "three"), ("four.txt", "four")):
        assert git(origin, "show", f"{task.branch}:{name}") == text
    assert BudgetPause.objects.get(task=task).status == BudgetPause.Status.RAISED
    assert task.pr_number and len(standin.pulls_of("octo/sample")) == 1
    assert task.cost_usd == stopped.cost_usd + resumed.cost_usd < 3
