"""End to end with the real `claude` CLI against the scripted model server: a task opens its
pull request, a review with an inline comment starts a round, the round's building stage
resumes the earlier Claude Code session (`claude --resume`), really edits and commits in the
worktree, and the same pull request gets the new commit and a reply with the cost."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import ROOT, make_origin_and_clone, point_claude_at
from github_standin import TOKEN, standin  # noqa: F401
from rounds_helpers import branch_head, commits_on, drive

from coordinator.loop import Coordinator
from harness.modelserver import ScriptedModelServer
from pipeline.github import GitHubClient
from pipeline.models import Repository, Round, StageResult, Task

pytestmark = [pytest.mark.cli, pytest.mark.slow]

FOLLOW_UP = {
    "name": "building-follow-up",
    # Only a round's building prompt says this; a resumed session shows it as its new prompt.
    "match": "TACX-STAGE: building (round 2) (follow-up review)",
    "turns": [
        {
            "text": "Addressing the review: greet() gets a comma.",
            "tool_calls": [{"bash": "printf '\\n\\ndef greet_all(names):\\n    return [greet(n) for n in names]\\n' >> greeter.py && git commit -qam 'Address review: greet_all()' && git log --oneline -1"}],
            "usage": {"input_tokens": 900, "output_tokens": 40, "cache_read_input_tokens": 3000, "cache_creation_input_tokens": 0},
        },
        {"text": "Done.", "usage": {"input_tokens": 950, "output_tokens": 5, "cache_read_input_tokens": 3000, "cache_creation_input_tokens": 0}},
    ],
}


def test_a_review_round_resumes_the_claude_session_and_pushes_to_the_same_pull_request(db, client, standin, tmp_path, monkeypatch):  # noqa: F811
    script = copy.deepcopy(yaml.safe_load((ROOT / "demo" / "script.yaml").read_text()))
    script["conversations"].insert(0, FOLLOW_UP)
    origin, _ = make_origin_and_clone(tmp_path)  # demo/sample-repo: the default workflow (claude)
    standin.repos["octo/sample"].origin = str(origin)
    Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url=str(origin))
    standin.add_issue("octo/sample", number=21, title="Add a farewell", body="Please add farewell(name).", labels=("rpi-auto",), labeled_by="mo")
    with ScriptedModelServer(script) as server:
        point_claude_at(monkeypatch, server)
        coordinator = Coordinator(client=GitHubClient(base_url=standin.url, token=TOKEN), tick=0)
        coordinator.comments.min_edit_seconds = 0
        drive(coordinator)
        task = Task.objects.get()
        assert task.status == Task.Status.SUCCEEDED, task.status_reason
        first_build = StageResult.objects.get(task=task, stage__name="building")
        assert first_build.session_id
        head = branch_head(origin, task.branch)

        review = standin.submit_review("octo/sample", task.pr_number, author="mo", body="Almost.", comments=(("greeter.py", 2, "Greetings need a comma: 'Hello, Ada'."),))
        from rounds_helpers import deliver

        assert deliver(client, standin, "pull_request_review.submitted", delivery="rv", sender="mo", number=task.pr_number, review_id=review["id"]).status_code == 202
        drive(coordinator)

    round_ = Round.objects.get(task=task)
    assert round_.status == Round.Status.SUCCEEDED, round_.reason
    build = StageResult.objects.get(followup=round_, stage__name="building")
    assert build.success and build.provider == "claude"
    assert build.resumed_session_id == first_build.session_id
    assert "Greetings need a comma" in build.prompt and 'path="greeter.py" line="2"' in build.prompt
    assert (build.input_tokens, build.cache_read_tokens) == (1850, 6000)  # exactly the follow-up turns
    assert round_.resumed_session_id == first_build.session_id
    assert round_.tokens_saved == first_build.input_tokens + first_build.cache_read_tokens + first_build.cache_write_tokens > 0
    assert round_.cost_usd > 0
    assert branch_head(origin, task.branch) != head
    assert "Address review: greet_all()" in commits_on(origin, task.branch)
    (pull,) = standin.pulls_of("octo/sample")
    assert pull["number"] == task.pr_number
    # The reply is threaded under the review's first inline comment.
    (reply,) = [c for c in standin.replies_to(standin.review_comments_of(review["id"])[0]["id"]) if f"tacx:round:{round_.pk}" in c["body"]]
    assert "Address review: greet_all()" in reply["body"] and "resumed the previous session" in reply["body"]
    assert [r["content"] for r in standin.review_comments[standin.review_comments_of(review["id"])[0]["id"]]["reactions_list"]] == ["eyes"]
