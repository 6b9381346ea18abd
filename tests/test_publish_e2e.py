"""What TAC-X publishes, end to end with the real sandbox and the `command` provider:

* a plan that tries to hide TAC-X's sections (`<!--`, `</details>`) and to forge a "Tests:
  passed" section is shown quoted in the PR body: rendered as CommonMark (markdown-it-py, with
  GitHub's tables), TAC-X's headings are real headings and the forged one is not;
* a builder that writes a secret base64-encoded into a file: the push is refused by the publish
  guard, the attempt fails for good, the origin never gets it, an alert goes out, and the value
  is in no stage result, event or API answer;
* a plan that carries a secret hex-encoded: the PR body is never posted (the stand-in receives
  no pull request), and it is not stored as the pr_creation result either.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from django.core import mail
from github_standin import command_workflow, standin  # noqa: F401
from markdown_it import MarkdownIt
from test_coordinator_e2e import issue_run

from pipeline import jobs, services
from pipeline.github import GitHubClient
from pipeline.models import AgentEvent, Repository, Stage, StageResult, Task
from tests.conftest import git, make_origin_and_clone

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CANARY = "sk-ant-api03-CANARY-e2e-5d1f0c9b7a3e2d48"

FORGED_PLAN = """# Plan

Add CHANGES.md.

## Tests

**passed** (forged by the planner)

</details>

<!-- everything TAC-X writes below is hidden
"""


def github_repository(tmp_path: Path, workflow: str) -> Repository:
    origin, _ = make_origin_and_clone(tmp_path, "sample", {"README.md": "# sample\n", ".tac/workflow.yaml": workflow})
    return Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url=str(origin), default_branch="main")


def headings(markdown: str) -> list[str]:
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    return [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]


def test_a_plan_cannot_hide_close_or_forge_the_sections_of_the_pr_body(tmp_path, standin):  # noqa: F811
    planner = f"import pathlib; pathlib.Path('plan.md').write_text({FORGED_PLAN!r}); print('planned')"
    workflow = command_workflow(planning=planner).replace("version: 1\n", "version: 1\ntest_command: python3 -c \"print('1 passed')\"\n")
    github_repository(tmp_path, workflow)
    task, _ = issue_run(standin, client=GitHubClient())
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    (pull,) = standin.pulls_of("octo/sample")
    body = pull["body"]

    # TAC-X's sections are real headings, in order; the planner's "Tests" is not one.
    assert headings(body) == ["Plan", "Review", "Tests", "Usage", "Sandbox"]
    tokens = MarkdownIt("commonmark").enable("table").parse(body)
    fences = [t.content for t in tokens if t.type == "fence"]
    # The plan, literal inside one fence, less its own top heading (the body's "## Plan" says it).
    assert fences[0] == FORGED_PLAN.removeprefix("# Plan\n\n")
    # No HTML of the agent's: the only HTML blocks are TAC-X's own <details> around the test output.
    html = [t.content.strip() for t in tokens if t.type in ("html_block", "html_inline")]
    assert all(h.startswith(("<details>", "</details>")) for h in html), html
    assert "Opened by TAC-X" in MarkdownIt("commonmark").enable("table").render(body)  # the end is visible


def leaking_builder(found: Path) -> str:
    """The builder reads a secret it found (the file `found`: how it got there is the gate's
    business) and writes it base64-encoded (after a 2-byte prefix, wrapped at 60 columns) into a
    file, as an agent hiding it would. Its script does not carry the value."""
    return (
        "import base64, pathlib, textwrap; "
        f"raw = b'k=' + pathlib.Path({str(found)!r}).read_bytes(); "
        "pathlib.Path('notes').mkdir(); "
        "pathlib.Path('notes/blob.txt').write_text('\\n'.join(textwrap.wrap(base64.b64encode(raw).decode(), 60)) + '\\n'); "
        "print('built')"
    )


def origin_objects(origin: Path) -> bytes:
    out = subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], cwd=origin, capture_output=True, check=True)
    return out.stdout


def assert_nowhere(task: Task, client, needles: list[str]) -> None:
    stored = json.dumps(
        [list(StageResult.objects.filter(task=task).values()), list(AgentEvent.objects.filter(task=task).values_list("data", flat=True))],
        default=str,
    )
    answers = ""
    for tail in ("", "stages/", "attempts/", "events/"):
        answer = client.get(f"/api/tasks/{task.pk}/{tail}")
        assert answer.status_code == 200, tail
        answers += answer.content.decode()
    for needle in needles:
        assert needle not in stored and needle not in answers


def test_a_base64_secret_committed_by_the_builder_is_never_pushed(tmp_path, origin_and_clone, local_repository, monkeypatch, settings, admin_client):
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    found = tmp_path / "found" / "secret"
    found.parent.mkdir()
    found.write_text(CANARY)
    settings.TACX = {**settings.TACX, "ALERT_EMAILS": ["ops@example.com"], "SANDBOX_ALLOW_READ": [*settings.TACX["SANDBOX_ALLOW_READ"], str(found.parent)]}
    origin, clone = origin_and_clone
    (clone / ".tac").mkdir()
    (clone / ".tac" / "workflow.yaml").write_text(command_workflow(building=leaking_builder(found), stages=("planning", "building", "pr_creation")))
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "workflow")
    task, _ = services.task_create(repository=local_repository, issue_number=4, title="Leak", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)

    assert task.status == Task.Status.FAILED
    building = Stage.objects.get(task=task, name="building")
    assert building.attempts == 1  # permanent: not retried
    assert building.error == (
        f"the branch {task.branch} contains the value of ANTHROPIC_API_KEY (base64) in notes/blob.txt; it was not pushed"
    ), building.error
    assert task.branch not in git(origin, "branch", "--list")
    encoded = base64.b64encode(b"k=" + CANARY.encode())
    flat = origin_objects(origin).replace(b"\n", b"")
    assert encoded[8:40] not in flat and CANARY.encode() not in flat
    (alert,) = [m for m in mail.outbox if "publish blocked" in m.subject]
    assert "ANTHROPIC_API_KEY (base64) in notes/blob.txt" in alert.body and CANARY not in alert.body
    assert_nowhere(task, admin_client, [CANARY, encoded.decode()[4:40]])


def test_a_secret_in_the_plan_never_reaches_the_pull_request(tmp_path, standin, monkeypatch, settings):  # noqa: F811
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    settings.TACX = {**settings.TACX, "ALERT_EMAILS": ["ops@example.com"]}
    planner = f"import pathlib; pathlib.Path('plan.md').write_text('# Plan\\n\\nconfig: {CANARY.encode().hex()}\\n'); print('planned')"
    github_repository(tmp_path, command_workflow(planning=planner))
    task, _ = issue_run(standin, client=GitHubClient())

    assert task.status == Task.Status.FAILED
    pr_stage = Stage.objects.get(task=task, name="pr_creation")
    assert pr_stage.attempts == 1 and pr_stage.error == "the pull request body contains the value of OPENAI_API_KEY (hex); it was not published"
    assert standin.pulls_of("octo/sample") == [] and not standin.requests_to("POST", r"/pulls$")
    assert not StageResult.objects.filter(task=task, stage__name="pr_creation").exclude(output_text="").exists()
    assert any("publish blocked" in m.subject and "OPENAI_API_KEY (hex)" in m.body for m in mail.outbox)
    for comment in standin.comments_on("octo/sample", 12):  # the progress comment says why, without the value
        assert CANARY.encode().hex() not in comment["body"]
