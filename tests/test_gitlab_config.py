# ruff: noqa: F811  (pytest fixtures imported from the helpers are redefined as arguments)
"""Configuring forges and trackers (issue 26 item 5): `add_repo` and the admin take the forge
and tracker kinds and their settings (never secrets), tokens come from the environment or a
file, and `/health` shows each source's last successful poll without naming repositories."""

from __future__ import annotations

import base64

import pytest
from django.core.management import CommandError, call_command

from pipeline import forges
from pipeline.admin import RepositoryForm
from pipeline.models import Repository
from tacx_site.settings import env_or_file

from gitlab_helpers import PROJECT, gitlab, gitlab_repo  # noqa: F401  isort: skip


def test_add_repo_registers_a_self_hosted_gitlab_project_in_nested_groups(db):
    call_command(
        "add_repo", "acme/platform/api", "--forge", "gitlab", "--forge-url", "https://gitlab.acme.example/", "--label", "tacx"
    )
    repo = Repository.objects.get()
    assert (repo.kind, repo.full_name, repo.forge_url, repo.trigger_label, repo.tracker) == (
        "gitlab",
        "acme/platform/api",
        "https://gitlab.acme.example",
        "tacx",
        "gitlab",
    )
    assert forges.forge_for(repo).clone_url(repo) == "https://gitlab.acme.example/acme/platform/api.git"


def test_add_repo_names_another_tracker_and_its_settings(db):
    call_command(
        "add_repo", "octo/sample", "--tracker", "linear", "--tracker-setting", "team=ENG", "--tracker-setting", "label=tacx"
    )
    repo = Repository.objects.get()
    assert (repo.kind, repo.tracker_kind, repo.tracker, repo.tracker_settings) == (
        "github",
        "linear",
        "linear",
        {"team": "ENG", "label": "tacx"},
    )


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["octo/sample", "--tracker-setting", "api_token=abc"], "looks like a secret"),
        (["octo/sample", "--tracker-setting", "team"], "is not KEY=VALUE"),
        (["octo/sample", "--forge-url", "https://gitlab.example"], "only with --forge gitlab"),
        (["acme/api", "--forge", "gitlab", "--forge-url", "ftp://x"], "http(s) URL"),
        (["not a path", "--forge", "gitlab"], "not a GitLab project path"),
    ],
)
def test_add_repo_refuses_secrets_and_bad_values_with_the_reason(db, args, problem):
    with pytest.raises(CommandError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        call_command("add_repo", *args)
    assert not Repository.objects.exists()


def test_the_admin_form_refuses_a_secret_in_the_tracker_settings(db):
    base = {
        "kind": "github",
        "full_name": "octo/x",
        "default_branch": "main",
        "trigger_label": "rpi-auto",
        "max_concurrent_tasks": 2,
        "daily_budget_on_exceed": "fail",
        "created_at": "2026-01-01 00:00",
    }
    form = RepositoryForm(data={**base, "tracker_kind": "jira", "tracker_settings": '{"project": "PROJ", "password": "hunter2"}'})
    assert not form.is_valid() and "looks like a secret" in str(form.errors["tracker_settings"])
    form = RepositoryForm(
        data={**base, "tracker_kind": "jira", "tracker_settings": '{"project": "PROJ", "jql": "labels = tacx"}'}
    )
    assert form.is_valid(), form.errors


def test_tokens_come_from_the_environment_or_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("GITLAB_TOKEN", "glpat-from-env")
    assert env_or_file("GITLAB_TOKEN") == "glpat-from-env"
    monkeypatch.delenv("GITLAB_TOKEN")
    secret = tmp_path / "token"
    secret.write_text("glpat-from-file\n")
    monkeypatch.setenv("GITLAB_TOKEN_FILE", str(secret))
    assert env_or_file("GITLAB_TOKEN") == "glpat-from-file"


def test_the_gitlab_push_header_carries_the_token_as_basic_auth_and_nothing_else_does(db, settings):
    settings.GITLAB_TOKEN = "glpat-push-token-0123"
    repo = Repository.objects.create(kind="gitlab", full_name="acme/api")
    header = forges.forge_for(repo).push_auth_header(repo)
    assert base64.b64decode(header.removeprefix("Authorization: Basic ")).decode() == "oauth2:glpat-push-token-0123"
    assert "glpat" not in forges.forge_for(repo).clone_url(repo)


def test_health_shows_each_sources_last_successful_poll_without_names(client, db):
    from django.utils import timezone

    Repository.objects.create(kind="github", full_name="octo/secret-name", poll_succeeded_at=timezone.now())
    Repository.objects.create(kind="gitlab", full_name="acme/hidden")
    Repository.objects.create(kind="github", full_name="octo/linear-one", tracker_kind="linear")
    body = client.get("/health").json()
    sources = body["sources"]
    assert set(sources) == {"github", "gitlab", "linear"}
    assert sources["github"]["repositories"] == 1 and sources["github"]["last_success_age_seconds"] is not None
    assert sources["gitlab"] == {
        "repositories": 1,
        "never_polled": 1,
        "last_success_age_seconds": None,
        "oldest_success_age_seconds": None,
    }
    assert "secret-name" not in str(body) and "hidden" not in str(body)


def test_the_merge_request_is_opened_as_a_draft_once_and_a_ready_one_stays_ready(gitlab_repo, gitlab):  # noqa: F811
    from pipeline.gitlab_api import GitLabClient

    client = GitLabClient(base_url=gitlab.url)
    first = client.merge_request_open_or_update(
        PROJECT, source="tacx/1-x", target="main", title="X (#1)", description="one", draft=True
    )
    assert (first["iid"], first["title"], first["draft"]) == (1, "Draft: X (#1)", True)
    again = client.merge_request_open_or_update(
        PROJECT, source="tacx/1-x", target="main", title="X (#1)", description="two", draft=True
    )
    assert (again["iid"], again["description"], len(gitlab.mrs_of(PROJECT))) == (1, "two", 1)
    gitlab.mrs[PROJECT][1].update(title="X (#1)", draft=False)  # a person marked it ready
    ready = client.merge_request_open_or_update(
        PROJECT, source="tacx/1-x", target="main", title="X (#1)", description="three", draft=True
    )
    assert (ready["title"], ready["draft"], ready["description"]) == ("X (#1)", False, "three")
