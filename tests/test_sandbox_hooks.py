"""The repository's own commands (setup, test_command) run in the agent sandbox with rights of
their own: their network allow-list (not the agents'), the `setup_env` secrets (never given to
agents), and a HOME that is not the agent's."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import jobs, services
from pipeline.models import AgentEvent, StageResult, Task
from tests.conftest import commit_workflow
from tests.test_sandbox_containment import http_servers  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db(transaction=True)]

FETCH = "import sys, urllib.request as u\nfor p in sys.argv[1:]:\n    try: print(p, u.urlopen(f'http://127.0.0.1:{p}/', timeout=10).read().decode())\n    except Exception as e: print(p, 'refused', e)\n"


def run_setup(repository, clone: Path, workflow: dict) -> Task:
    """Commit ``workflow`` to ``clone``, then run a task with it in this process until it ends."""
    commit_workflow(clone, yaml.safe_dump(workflow))
    task, _ = services.task_create(repository=repository, issue_number=2, title="Setup", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return jobs.task_run_inline(task=task)


def test_setup_reaches_its_hosts_and_keeps_its_secret_from_the_agent(local_repository, origin_and_clone, http_servers, monkeypatch):  # noqa: F811
    origin, clone = origin_and_clone
    allowed, denied = http_servers
    monkeypatch.setenv("REGISTRY_TOKEN", "tok-setup-only-123456")
    fetch = [sys.executable, "-c", FETCH, str(allowed.server_port), str(denied.server_port)]
    planner = (
        "import json, os, pathlib, sys, urllib.request as u\n"
        "try: got = u.urlopen(sys.argv[1], timeout=10).read().decode()\n"
        "except Exception as e: got = 'refused'\n"
        "home = sorted(os.listdir(os.environ['HOME']))\n"
        "pathlib.Path('plan.md').write_text('# Plan\\n\\n' + json.dumps({'got': got, 'token': 'REGISTRY_TOKEN' in os.environ, 'home': home}))\n"
    )
    workflow = {
        "setup_env": ["REGISTRY_TOKEN"],
        "hooks": {
            "setup": {
                "run": [" ".join(shlex.quote(a) for a in fetch) + ' && echo "token=${REGISTRY_TOKEN:+yes}" && echo secret > "$HOME/.npmrc"'],
                "network": {"allow": [f"127.0.0.1:{allowed.server_port}"]},
            }
        },
        "stages": [
            {"name": "planning", "provider": "command", "options": {"argv": [sys.executable, "-c", planner, f"http://127.0.0.1:{allowed.server_port}/"]}},
            {"name": "pr_creation"},
        ],
    }
    task = run_setup(local_repository, clone, workflow)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason

    setup = AgentEvent.objects.get(task=task, data__hook="setup", data__status="passed").data["output"]
    assert f"{allowed.server_port} ALLOWED-MARKER" in setup
    assert f"{denied.server_port} refused" in setup and "DENIED-MARKER" not in setup
    assert "token=yes" in setup and "tok-setup-only-123456" not in setup
    blocked = sorted((e.data.get("hook", "agent"), e.data["port"]) for e in AgentEvent.objects.filter(task=task, kind="sandbox"))
    assert blocked == sorted([("setup", denied.server_port), ("agent", allowed.server_port)])

    # The agent: not the setup's host (its own allow-list is empty), no secret, a HOME of its own.
    plan = json.loads(StageResult.objects.get(task=task, stage__name="planning").output_text.split("\n", 2)[2])
    assert plan["got"] == "refused" and plan["token"] is False and ".npmrc" not in plan["home"]


def test_one_refused_connection_in_a_three_command_hook_is_counted_once(local_repository, origin_and_clone, http_servers):  # noqa: F811
    """The commands of one hook share a sandbox root; each has its own refusal log, so the one
    connection refused in the second command is one `sandbox` event and "Blocked 1 connection"."""
    origin, clone = origin_and_clone
    _allowed, denied = http_servers
    fetch = " ".join(shlex.quote(a) for a in [sys.executable, "-c", FETCH, str(denied.server_port)])
    workflow = {
        "hooks": {"setup": {"run": ["echo first", fetch, "echo third"]}},
        "stages": [
            {"name": "planning", "provider": "command", "options": {"argv": [sys.executable, "-c", "import pathlib; pathlib.Path('plan.md').write_text('# Plan\\n\\nx\\n')"]}},
            {"name": "pr_creation"},
        ],
    }
    task = run_setup(local_repository, clone, workflow)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason

    assert f"{denied.server_port} refused" in AgentEvent.objects.get(task=task, data__hook="setup", data__status="passed").data["output"]
    events = list(AgentEvent.objects.filter(task=task, kind="sandbox").values_list("data__hook", "data__port"))
    assert events == [("setup", denied.server_port)]
    body = StageResult.objects.get(task=task, stage__name="pr_creation").output_text
    assert "Blocked 1 connection:" in body and f"127.0.0.1:{denied.server_port}" in body, body


def test_a_setup_refused_by_the_allow_list_fails_naming_the_host_and_the_key_that_allows_it(local_repository, origin_and_clone, http_servers):  # noqa: F811
    origin, clone = origin_and_clone
    _allowed, denied = http_servers
    fetch = "import sys, urllib.request as u\nu.urlopen(f'http://127.0.0.1:{sys.argv[1]}/', timeout=10)\n"
    workflow = {
        "hooks": {"setup": {"run": [" ".join(shlex.quote(a) for a in [sys.executable, "-c", fetch, str(denied.server_port)])]}},
        "stages": [{"name": "planning", "provider": "command", "options": {"argv": [sys.executable, "-c", "print('never')"]}}, {"name": "pr_creation"}],
    }
    task = run_setup(local_repository, clone, workflow)

    assert task.status == Task.Status.FAILED
    reason = task.status_reason
    assert f"setup hook failed: the sandbox refused connections to 127.0.0.1:{denied.server_port}" in reason, reason
    assert f"`hooks.setup.network.allow: [127.0.0.1:{denied.server_port}]`" in reason and "Output: " in reason
