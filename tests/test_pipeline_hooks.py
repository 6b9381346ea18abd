"""Hooks and test evidence on a real repository with a bare origin: `setup` installs a tiny local
package (a vendored wheel, with pip, no network) once per worktree (again when the worktree is re-created on another machine), the
`test_command` TAC-X runs after building fails once and sends the task back to building with
its output in the prompt, then passes; the reviewer's prompt and the PR body carry the result.
`setup_env` secrets reach setup and the tests, never an agent stage."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import attempt, jobs, services
from pipeline.models import AgentEvent, Stage, StageResult, Task
from tests.conftest import git, grant, processes_matching

SECRET = "npm_hooktestsecret0123456789"

# The builder: first round a farewell that fails the repository's check, then (when the failing
# test output is in its prompt) the right one. It notes its prompt and environment.
BUILDER = """
import json, os, pathlib, sys
prompt = sys.argv[1]
# Agents run sandboxed (they cannot write the hooks' log directory): the record goes to stdout.
print('AGENTRUN ' + json.dumps({'stage': 'building', 'prompt': prompt, 'env': dict(os.environ)}))
right = 'AssertionError: farewell says' in prompt
text = "Goodbye, {}" if right else "Bye {}"
pathlib.Path('farewell.py').write_text('def farewell(name):\\n    return %r.format(name)\\n' % text)
print('built', 'fixed' if right else 'first try')
"""
REVIEWER = """
import json, os, pathlib, sys
print('AGENTRUN ' + json.dumps({'stage': 'reviewing', 'prompt': sys.argv[1], 'env': dict(os.environ)}))
print('VERDICT: APPROVE')
"""
PLANNER = "import pathlib; pathlib.Path('plan.md').write_text('# Plan\\n\\nAdd farewell.py.\\n')"
# The repository's own check: uses the package setup installed, and the builder's code.
CHECK = """
import os, sys
sys.path.insert(0, '.deps')
import tinypkg
from farewell import farewell
assert farewell('Ada') == tinypkg.expected('Ada'), f"farewell says {farewell('Ada')!r}"
print('all good in', os.path.abspath(__file__))
open('.pytest-like-cache', 'w').write('left behind by the tests')
"""


def agent(script: str, *, passes_prompt: bool = True) -> dict:
    # The agent gets HOOKTEST_LOG through the command provider's literal env option.
    return {"argv": [sys.executable, "-c", script, *(["{prompt}"] if passes_prompt else [])], "env": {"HOOKTEST_LOG": os.environ["HOOKTEST_LOG"]}}


def stage(name: str, script: str, *, passes_prompt: bool = True) -> dict:
    return {"name": name, "provider": "command", "timeout": 60, "max_attempts": 1, "options": agent(script, passes_prompt=passes_prompt)}


def tiny_wheel() -> bytes:
    """A pure-Python wheel of the package `tinypkg` (what a vendored dependency looks like)."""
    import base64
    import hashlib
    import io
    import zipfile

    files = {
        "tinypkg/__init__.py": "def expected(name):\n    return f'Goodbye, {name}'\n",
        "tinypkg-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        "tinypkg-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tacx-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def digest(data: bytes) -> str:
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{name},{digest(text.encode())},{len(text.encode())}\n" for name, text in files.items())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr("tinypkg-0.1.dist-info/RECORD", record + "tinypkg-0.1.dist-info/RECORD,,\n")
    return buffer.getvalue()


WHEEL = "vendor/tinypkg-0.1-py3-none-any.whl"


def planner_workflow_without_tests(clone: Path, log: Path) -> dict:
    """The repository set up with a planning stage only, and its workflow without ``test_command``
    for the caller to change and commit."""
    setup_repository(clone, log, stages=[stage("planning", PLANNER, passes_prompt=False), {"name": "pr_creation"}])
    wf = yaml.safe_load((clone / ".tac" / "workflow.yaml").read_text())
    del wf["test_command"]
    return wf


def setup_repository(clone: Path, log: Path, *, stages: list[dict], **extra) -> None:
    (clone / "vendor").mkdir()
    (clone / WHEEL).write_bytes(tiny_wheel())
    (clone / "check.py").write_text(CHECK)
    (clone / ".gitignore").write_text(".deps/\n")
    workflow = {
        "review_rounds": 2,
        "stages": stages,
        "hooks": {
            "setup": {
                "run": [
                    # A real installation of a local package: no index, no network.
                    f"{sys.executable} -m pip install --quiet --no-index --no-cache-dir --disable-pip-version-check --target .deps {WHEEL}",
                    f'echo "setup on $(hostname) token=${{NPM_TOKEN:-absent}}" >> {log}/setup.log',
                    'echo "setup sees $NPM_TOKEN"',
                ],
                "timeout": 60,
                "network": {"allow": ["registry.npmjs.org"]},
            },
            "before_stage": {"run": f'echo "$TACX_STAGE token=${{NPM_TOKEN:-absent}}" >> {log}/before.log'},
            "after_stage": "echo after $TACX_STAGE",
        },
        "test_command": {"run": f"{sys.executable} check.py", "timeout": 60},
        "setup_env": ["NPM_TOKEN"],
        **extra,
    }
    (clone / ".tac").mkdir(exist_ok=True)
    (clone / ".tac" / "workflow.yaml").write_text(yaml.safe_dump(workflow))
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "hooks workflow")


@pytest.fixture
def log(tmp_path, monkeypatch, settings):
    path = tmp_path / "hooklog"
    path.mkdir()
    # The hooks run in the agent sandbox: this directory is one they (never agents) may write.
    settings.TACX = {**settings.TACX, "SANDBOX_HOOK_WRITE": [str(path)]}
    monkeypatch.setenv("HOOKTEST_LOG", str(path))
    monkeypatch.setenv("NPM_TOKEN", SECRET)
    from pipeline.lib import redaction

    redaction.refresh_literal_secrets()
    return path


def start(repository) -> Task:
    task, _ = services.task_create(repository=repository, issue_number=7, title="Add farewell", body="Please.", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return task


def agent_runs(task: Task) -> list[dict]:
    texts = AgentEvent.objects.filter(task=task, kind="output").order_by("id").values_list("data__text", flat=True)
    return [json.loads(t[len("AGENTRUN "):]) for t in texts if t and t.startswith("AGENTRUN ")]


@pytest.mark.django_db(transaction=True)
def test_failing_tests_send_the_task_back_to_building_and_the_pr_body_shows_the_passing_run(local_repository, origin_and_clone, log, monkeypatch):
    origin, clone = origin_and_clone
    stages = [stage("planning", PLANNER, passes_prompt=False), stage("building", BUILDER), stage("reviewing", REVIEWER), {"name": "pr_creation"}]
    setup_repository(clone, log, stages=stages)

    task = jobs.task_run_inline(task=start(local_repository))

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    building = list(StageResult.objects.filter(task=task, stage__name="building").order_by("id"))
    assert [(b.round, b.tests_status, b.tests_exit_code) for b in building] == [(1, "failed", 1), (2, "passed", 0)]
    assert "AssertionError: farewell says 'Bye Ada'" in building[0].tests_output
    assert "all good" in building[1].tests_output

    # Round 2's builder was given the failing output; the reviewer the passing result.
    runs = agent_runs(task)
    assert [r["stage"] for r in runs] == ["building", "building", "reviewing"]
    assert "AssertionError" not in runs[0]["prompt"]
    assert "<test_result>" in runs[1]["prompt"] and "AssertionError: farewell says 'Bye Ada'" in runs[1]["prompt"]
    assert "tests: passed (exit 0" in runs[2]["prompt"] and "all good" in runs[2]["prompt"]

    # setup ran once (one worktree), installed the package with pip, and had the secret; agent
    # stages and before_stage never saw it.
    assert (Path(task.worktree_path) / ".deps" / "tinypkg-0.1.dist-info" / "METADATA").is_file()
    assert (log / "setup.log").read_text().splitlines() == [f"setup on {socket.gethostname()} token={SECRET}"]
    assert all("NPM_TOKEN" not in r["env"] for r in runs)
    assert all(line.endswith("token=absent") for line in (log / "before.log").read_text().splitlines())
    assert len((log / "before.log").read_text().splitlines()) == 4  # planning, building x2, reviewing
    # ...and the secret setup printed was redacted before it was stored.
    setup_event = AgentEvent.objects.get(task=task, data__hook="setup", data__status="passed")
    assert "setup sees [REDACTED]" in setup_event.data["output"]
    assert not AgentEvent.objects.filter(data__icontains=SECRET).exists()
    hooks_seen = list(AgentEvent.objects.filter(task=task, data__has_key="hook").exclude(data__status="running").values_list("result__stage__name", "data__hook", "data__status"))
    assert ("building", "test_command", "failed") in hooks_seen and ("building", "test_command", "passed") in hooks_seen
    assert ("planning", "after_stage", "passed") in hooks_seen

    # The PR body carries the result; the tests' leftovers never reached the branch.
    body = StageResult.objects.get(task=task, stage__name="pr_creation").output_text
    assert "## Tests" in body and "**passed (exit 0" in body and "check.py" in body
    files = git(origin, "ls-tree", "-r", "--name-only", task.branch).split()
    assert "farewell.py" in files and ".pytest-like-cache" not in files and not any(f.startswith(".deps") for f in files)
    assert "Goodbye" in git(origin, "show", f"{task.branch}:farewell.py")



@pytest.mark.django_db(transaction=True)
def test_the_api_and_the_stage_timeline_show_each_building_attempts_test_result(local_repository, origin_and_clone, log, client, django_user_model):
    origin, clone = origin_and_clone
    stages = [stage("planning", PLANNER, passes_prompt=False), stage("building", BUILDER), {"name": "pr_creation"}]
    setup_repository(clone, log, stages=stages)
    task = jobs.task_run_inline(task=start(local_repository))
    assert task.status == Task.Status.SUCCEEDED, task.status_reason

    client.force_login(grant(django_user_model.objects.create_user("viewer", "v@example.com", "pw-pw-pw-pw"), "view_task"))
    answer = client.get(f"/api/tasks/{task.pk}/attempts/").json()
    attempts = answer["results"] if isinstance(answer, dict) else answer
    building = [(a["round"], a["tests_status"], a["tests_exit_code"]) for a in attempts if a["stage"] == "building"]
    assert building == [(1, "failed", 1), (2, "passed", 0)]
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "tests failed" in page and "tests passed" in page


@pytest.mark.django_db(transaction=True)
def test_tests_that_keep_failing_fail_the_task_after_the_review_rounds(local_repository, origin_and_clone, log):
    origin, clone = origin_and_clone
    never_right = BUILDER.replace("right = 'AssertionError: farewell says' in prompt", "right = False")
    stages = [stage("planning", PLANNER, passes_prompt=False), stage("building", never_right), {"name": "pr_creation"}]
    setup_repository(clone, log, stages=stages)

    task = jobs.task_run_inline(task=start(local_repository))

    assert task.status == Task.Status.FAILED
    assert task.status_reason.startswith(
        "tests still failing after 2 failing test round(s) (max_test_rounds: 2; 0 review(s) requested changes): test_command failed (exit 1"
    )
    assert StageResult.objects.filter(task=task, stage__name="building").count() == 2
    assert not StageResult.objects.filter(task=task, stage__name="pr_creation").exists()


@pytest.mark.django_db(transaction=True)
def test_a_failing_test_round_does_not_use_up_the_review_rounds(local_repository, origin_and_clone, log, client, django_user_model):
    # Round 1's tests fail; round 2's pass and its review requests changes; round 3 is approved.
    # With review_rounds: 2 the one review that asked for changes gets its round.
    origin, clone = origin_and_clone
    right_after_round_1 = BUILDER.replace("right = 'AssertionError: farewell says' in prompt", "right = '(round ' in prompt.splitlines()[0]")
    picky_once = REVIEWER.replace("print('VERDICT: APPROVE')", "print('VERDICT: REQUEST_CHANGES' if '(round 2)' in sys.argv[1].splitlines()[0] else 'VERDICT: APPROVE')")
    stages = [stage("planning", PLANNER, passes_prompt=False), stage("building", right_after_round_1), stage("reviewing", picky_once), {"name": "pr_creation"}]
    setup_repository(clone, log, stages=stages)

    task = jobs.task_run_inline(task=start(local_repository))

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    building = list(StageResult.objects.filter(task=task, stage__name="building").order_by("id").values_list("round", "tests_status"))
    assert building == [(1, "failed"), (2, "passed"), (3, "passed")]
    reviews = list(StageResult.objects.filter(task=task, stage__name="reviewing").order_by("id").values_list("round", "verdict"))
    assert reviews == [(2, "REQUEST_CHANGES"), (3, "APPROVE")]
    assert services.test_rounds_failed(task) == 1 and services.review_requests_used(task) == 1
    statuses = list(AgentEvent.objects.filter(task=task, kind="status").values_list("data__message", flat=True))
    assert any("review requested changes: back to building (round 3)" in (t or "") for t in statuses), statuses
    body = StageResult.objects.get(task=task, stage__name="pr_creation").output_text
    # Item 10: no forge keyword for a local repository, the plan's own heading not repeated,
    # paths in the test output relative to the repository.
    assert "Closes #" not in body and body.startswith("Task for issue 7 of ")
    assert "> # Plan" not in body and "# Plan" not in body.split("## Review")[0].split("## Plan")[1] and "Add farewell.py." in body
    assert "all good in check.py" in body and task.worktree_path not in body
    assert "Rounds: 3 building round(s); 1 sent back by failing tests (max_test_rounds: 2), 1 by a review requesting changes (review_rounds: 2)." in body
    client.force_login(grant(django_user_model.objects.create_user("viewer", "v@example.com", "pw-pw-pw-pw"), "view_task"))
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "1 sent back by failing tests (max_test_rounds: 2), 1 by a review requesting changes (review_rounds: 2)" in page


@pytest.mark.django_db(transaction=True)
def test_a_failing_setup_fails_the_task_with_the_hooks_output_tail(local_repository, origin_and_clone, log):
    origin, clone = origin_and_clone
    setup_repository(clone, log, stages=[stage("planning", PLANNER, passes_prompt=False), stage("building", BUILDER), {"name": "pr_creation"}])
    wf = yaml.safe_load((clone / ".tac" / "workflow.yaml").read_text())
    wf["hooks"]["setup"] = {"run": ["echo installing", "echo 'E: package tinypkg not found' >&2; exit 7", "echo never"]}
    (clone / ".tac" / "workflow.yaml").write_text(yaml.safe_dump(wf))
    git(clone, "commit", "-qam", "broken setup")

    task = jobs.task_run_inline(task=start(local_repository))

    assert task.status == Task.Status.FAILED
    assert "setup hook failed" in task.status_reason and "E: package tinypkg not found" in task.status_reason
    assert "never" not in task.status_reason
    (result,) = StageResult.objects.filter(task=task)
    assert result.stage.name == "planning" and result.exit_code is None and not result.prompt  # no agent started
    # The worker row names the hook's process group (on the host: the hook itself runs in the
    # sandbox's own PID namespace), so a reaper could kill it after a crash; it is gone now.
    from pipeline.agent_process import group_alive

    assert AgentEvent.objects.filter(task=task, data__hook="setup", data__status="failed").exists()
    assert result.worker.pgid and result.worker.pgid != 1 and not group_alive(result.worker.pgid)


@pytest.mark.django_db(transaction=True)
def test_a_worktree_recreated_on_another_machine_runs_setup_again(local_repository, origin_and_clone, log, monkeypatch):
    origin, clone = origin_and_clone
    setup_repository(
        clone,
        log,
        stages=[stage("planning", PLANNER, passes_prompt=False), stage("building", BUILDER.replace("right = 'AssertionError: farewell says' in prompt", "right = True")), {"name": "pr_creation"}],
    )
    task = start(local_repository)
    planning = Stage.objects.get(task=task, name="planning")
    assert attempt.run_stage(planning.pk, enqueue_next=False) == attempt.RunResult.SUCCEEDED
    task.refresh_from_db()
    assert task.setup_host == socket.gethostname()

    # The next stage runs on another machine, which has no copy of the worktree.
    shutil.rmtree(task.worktree_path)
    git(clone, "worktree", "prune")
    monkeypatch.setattr(socket, "gethostname", lambda: "other-machine")
    task = jobs.task_run_inline(task=task)

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    lines = (log / "setup.log").read_text().splitlines()
    assert len(lines) == 2
    assert task.setup_host == "other-machine" and task.worktree_host == "other-machine"


@pytest.mark.django_db(transaction=True)
def test_the_cleanup_hook_runs_before_the_worktree_is_removed_and_a_failure_is_only_logged(local_repository, origin_and_clone, log):
    origin, clone = origin_and_clone
    wf = planner_workflow_without_tests(clone, log)
    wf["stages"] = [stage("planning", PLANNER, passes_prompt=False), stage("building", BUILDER.replace("right = 'AssertionError: farewell says' in prompt", "right = True")), {"name": "pr_creation"}]
    # In the sandbox like every hook (it runs on what the agent left): a HOME of its own, and
    # nothing of TAC-X's tree (here: the tests' directory) in view.
    wf["hooks"]["cleanup"] = {"run": [f"ls > {log}/cleanup.txt", f'echo "$HOME" > {log}/cleanup-home.txt; ls {Path(__file__).parent} >> {log}/cleanup-home.txt 2>&1 || true', "exit 9"]}
    (clone / ".tac" / "workflow.yaml").write_text(yaml.safe_dump(wf))
    git(clone, "commit", "-qam", "cleanup hook")
    task = jobs.task_run_inline(task=start(local_repository))
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    body = StageResult.objects.get(task=task, stage__name="pr_creation").output_text
    assert "Tests were not run: the workflow has no `test_command`." in body

    assert services.task_worktree_remove(task=task)

    assert "farewell.py" in (log / "cleanup.txt").read_text().split()  # ran inside the worktree
    home, *listing = (log / "cleanup-home.txt").read_text().splitlines()
    assert home != os.environ["HOME"] and "tacx-attempt-" in home
    assert "conftest.py" not in " ".join(listing), listing
    assert not Path(task.worktree_path).exists()
    event = AgentEvent.objects.get(task=task, data__hook="cleanup")
    assert event.kind == AgentEvent.Kind.ERROR and event.data["exit_code"] == 9 and event.result_id is None
    assert {i["name"] for i in event.data["interpreters"]} == {"python3", "python", "node"}


@pytest.mark.django_db(transaction=True)
def test_hook_and_test_output_is_shown_on_the_task_page_escaped(local_repository, origin_and_clone, log, client, django_user_model):
    origin, clone = origin_and_clone
    wf = planner_workflow_without_tests(clone, log)
    wf["hooks"]["before_stage"] = "echo '<script>alert(1)</script> hostile hook output'"
    (clone / ".tac" / "workflow.yaml").write_text(yaml.safe_dump(wf))
    git(clone, "commit", "-qam", "hostile hook")
    task = jobs.task_run_inline(task=start(local_repository))
    assert task.status == Task.Status.SUCCEEDED, task.status_reason

    client.force_login(grant(django_user_model.objects.create_user("viewer", "v@example.com", "pw-pw-pw-pw"), "view_task"))
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "hook setup" in page and "setup passed (exit 0" in page and "hook before_stage" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; hostile hook output" in page and "<script>alert(1)" not in page
    assert "setup sees [REDACTED]" in page and SECRET not in page


@pytest.mark.django_db(transaction=True)
def test_a_setup_hook_past_its_timeout_is_killed_with_its_process_group_and_fails_the_task(local_repository, origin_and_clone, log):
    from pipeline.agent_process import group_alive

    origin, clone = origin_and_clone
    wf = planner_workflow_without_tests(clone, log)
    # A background grandchild plus a foreground sleep: both must go at the timeout. (The hook
    # runs in the sandbox's PID namespace: the host finds them by the tag on their command line.)
    tag = f"601.{os.getpid()}"
    wf["hooks"]["setup"] = {"run": [f"sleep {tag} & sleep {tag}"], "timeout": 2}
    (clone / ".tac" / "workflow.yaml").write_text(yaml.safe_dump(wf))
    git(clone, "commit", "-qam", "slow setup")

    task = jobs.task_run_inline(task=start(local_repository))

    assert task.status == Task.Status.FAILED
    assert "setup hook timed_out" in task.status_reason
    (result,) = StageResult.objects.filter(task=task)
    assert not group_alive(result.worker.pgid)
    assert processes_matching(tag) == []
    event = AgentEvent.objects.get(task=task, data__hook="setup", data__status="timed_out")
    assert event.data["message"].startswith("setup timed_out (") and event.data["message"].endswith("timed out after 2 s")
