"""The GitLab stand-in (harness/gitlab_standin/) as the tests use it: the `gitlab` and
`gitlab_repo` fixtures, a test token and webhook secret, and posting a delivery."""

from __future__ import annotations

import pytest

from harness.gitlab_standin import GitLabStandIn

GITLAB_TOKEN = "glpat-standinTokenForTests0123"
GITLAB_SECRET = "gitlab-webhook-secret-for-tests"
PROJECT = "acme/platform/sample"
BOT = "tacx-bot"


@pytest.fixture
def gitlab(settings):
    """A running stand-in with one project and a cast: alice (developer), mo (maintainer),
    rita (reporter), gus (guest); TAC-X's user is tacx-bot."""
    from django.core.cache import cache

    from pipeline import forges, trackers

    server = GitLabStandIn(token=GITLAB_TOKEN).start()
    server.add_project(
        PROJECT, members={"alice": "developer", "mo": "maintainer", "rita": "reporter", "gus": "guest", BOT: "developer"}
    )
    settings.GITLAB_TOKEN = GITLAB_TOKEN
    settings.GITLAB_WEBHOOK_SECRET = GITLAB_SECRET
    settings.GITLAB_URL = "https://gitlab.invalid"  # every repository of the tests names the stand-in in forge_url
    settings.GITLAB_USER = BOT
    settings.TACX = {**settings.TACX, "POLL_INTERVAL": 0.0, "DASHBOARD_URL": "https://tacx.example"}
    cache.clear()
    trackers.forget_instances()
    forges.forget_instances()
    yield server
    server.stop()
    cache.clear()


@pytest.fixture
def gitlab_repo(db, gitlab, tmp_path):
    """The project registered as a GitLab repository on the stand-in, its code in a bare
    repository on disk (branches are pushed there), its workflow the command-provider scripts."""
    from conftest import make_origin_and_clone
    from github_standin import command_workflow

    from pipeline.models import Repository

    files = {
        "README.md": "# sample\n",
        "greeter.py": "def greet(name):\n    return f'Hello {name}'\n",
        ".tac/workflow.yaml": command_workflow(),
    }
    origin, _clone = make_origin_and_clone(tmp_path, "sample", files)
    gitlab.origins[PROJECT] = str(origin)
    return Repository.objects.create(
        kind=Repository.Kind.GITLAB,
        full_name=PROJECT,
        clone_url=str(origin),
        forge_url=gitlab.url,
        default_branch="main",
        trigger_label="tacx",
    )


def post(client, body: bytes, headers: dict[str, str]):
    """POST a delivery to /webhooks/gitlab with GitLab's headers."""
    meta = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
    return client.post("/webhooks/gitlab", data=body, content_type="application/json", **meta)
