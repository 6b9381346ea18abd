"""Fetches and pushes over HTTP(S) work with either identity: git talks to the stand-in's real
`git http-backend`, which accepts only `x-access-token:<token>` of a valid token. The token
travels in a header for one command: it is in no remote URL, no git config, no stored text."""

from __future__ import annotations

import subprocess

import pytest
from github_standin import TOKEN, GitHubStandIn, command_workflow
from test_coordinator_e2e import labelled_issue_run
from test_github_app import APP_ID, PRIVATE_KEY, PUBLIC_KEY

from pipeline import github_auth
from pipeline.models import AgentEvent, Repository, StageResult, Task


@pytest.fixture
def server(tmp_path, settings):
    server = GitHubStandIn(token=TOKEN, app_id=APP_ID, app_public_key=PUBLIC_KEY, git_root=tmp_path / "gitroot").start()
    server.add_repo("octo/sample", permissions={"alice": "write"})
    server.add_installation(77, account="octo", repos=("octo/sample",))
    settings.GITHUB_API_URL = server.url
    settings.TACX = {**settings.TACX, "POLL_INTERVAL": 0.0, "DASHBOARD_URL": "https://tacx.example"}
    github_auth.forget_shared_identities()
    yield server
    server.stop()
    github_auth.forget_shared_identities()


def bare_origin(tmp_path):
    """octo/sample's repository as the stand-in serves it: gitroot/octo/sample.git."""
    from conftest import make_origin_and_clone

    origin, _ = make_origin_and_clone(tmp_path / "work", "sample", {"README.md": "# sample\n", ".tac/workflow.yaml": command_workflow()})
    target = tmp_path / "gitroot" / "octo" / "sample.git"
    target.parent.mkdir(parents=True)
    origin.rename(target)
    return target


def everything_git_knows(path) -> str:
    return subprocess.run(["git", "config", "--list", "--show-origin"], cwd=path, capture_output=True, text=True).stdout


@pytest.mark.parametrize("identity", ["app", "token"])
@pytest.mark.django_db(transaction=True)
def test_a_task_clones_and_pushes_over_http_with_the_identitys_token(identity, server, settings, tmp_path):
    if identity == "app":
        settings.GITHUB_APP_ID, settings.GITHUB_APP_PRIVATE_KEY, settings.GITHUB_TOKEN = str(APP_ID), PRIVATE_KEY, ""
    else:
        settings.GITHUB_APP_ID, settings.GITHUB_APP_PRIVATE_KEY, settings.GITHUB_TOKEN = "", "", TOKEN
    origin = bare_origin(tmp_path)
    url = f"{server.url}/git/octo/sample.git"
    task = labelled_issue_run(server, url, 3)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason

    # The branch reached the origin through git http-backend, authenticated.
    assert "CHANGES.md" in subprocess.run(["git", "ls-tree", "-r", "--name-only", task.branch], cwd=origin, capture_output=True, text=True, check=True).stdout
    pushes = [r for r in server.git_requests if r["query"] == "service=git-receive-pack" or r["path"].endswith("/git-receive-pack")]
    assert pushes and all(r["identity"] == ("installation:77" if identity == "app" else "token") for r in pushes)
    assert not any(r["identity"] == "" for r in server.git_requests if r["authorization"])

    secrets = list(server.installation_tokens) if identity == "app" else [TOKEN]
    assert secrets
    mirror = settings.VAR_DIR / "repos" / "octo-sample.git"
    configs = everything_git_knows(mirror) + everything_git_knows(task.worktree_path)
    stored = " ".join(str(v) for v in AgentEvent.objects.values_list("data", flat=True)) + " ".join(
        f"{r.prompt} {r.output_text} {r.error}" for r in StageResult.objects.all()
    )
    assert url in configs  # the remote URL is the plain one...
    for secret in secrets:
        assert secret not in configs and secret not in stored  # ...and no token is anywhere


@pytest.mark.django_db(transaction=True)
def test_without_credentials_the_http_remote_refuses_and_the_stage_fails_clearly(server, settings, tmp_path):
    from pipeline import services

    settings.GITHUB_APP_ID, settings.GITHUB_TOKEN = "", ""
    bare_origin(tmp_path)
    repository = Repository.objects.create(
        kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url=f"{server.url}/git/octo/sample.git", default_branch="main"
    )
    task, _ = services.task_create(repository=repository, issue_number=3, title="x", body="", trigger_source="cli")
    assert services.task_dispatch(task=task, enqueue=False) is False
    assert server.git_requests and all(r["identity"] == "" for r in server.git_requests)
