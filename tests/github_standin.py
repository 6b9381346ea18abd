"""The GitHub stand-in (harness/github_standin/) as the coordinator's tests use it: the
`standin` and `github_repo` fixtures, a test token and webhook secret, a command-provider
workflow, and webhook signing."""

from __future__ import annotations

import json

import pytest

from harness.github_standin import FIXTURES, GitHubStandIn, PlainText, fixture_bytes, github_now, user  # noqa: F401

# --- pytest fixtures and helpers shared by the coordinator's tests ------------------------------

WEBHOOK_SECRET = "test-webhook-secret"
TOKEN = "ghp_standinTokenForTests0123456789"


def command_workflow(*, planning: str | None = None, building: str | None = None, reviewing: str | None = None, stages: tuple[str, ...] = ("planning", "building", "reviewing", "pr_creation"), timeout: int = 60) -> str:
    """A `.tac/workflow.yaml` whose agent stages run small Python scripts (the `command`
    provider), so tests need no agent CLI: the planner writes plan.md, the builder changes a
    file, the reviewer approves."""
    import sys

    scripts = {
        "planning": planning or "import pathlib; pathlib.Path('plan.md').write_text('# Plan\\n\\nAdd CHANGES.md.\\n'); print('plan written')",
        "building": building or "import pathlib; pathlib.Path('CHANGES.md').write_text('built by the test agent\\n'); print('built')",
        "reviewing": reviewing or "print('Looks good.'); print('VERDICT: APPROVE')",
    }
    lines = ["version: 1"] + ([] if "pr_creation" in stages else ["publish: none"]) + ["stages:"]
    for name in stages:
        lines.append(f"  - name: {name}")
        if name == "pr_creation":
            continue
        lines += [
            "    provider: command",
            f"    timeout: {timeout}",
            "    max_attempts: 3",
            "    options:",
            f"      argv: {json.dumps([sys.executable, '-c', scripts[name]])}",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def standin(settings):
    """A running stand-in with one repository, octo/sample, and a cast of users: alice
    (write), mo (maintain), ada (admin), tom (triage), rita (read)."""
    from django.core.cache import cache

    server = GitHubStandIn(token=TOKEN).start()
    server.add_repo("octo/sample", permissions={"alice": "write", "mo": "maintain", "ada": "admin", "tom": "triage", "rita": "read"})
    settings.GITHUB_API_URL = server.url
    settings.GITHUB_TOKEN = TOKEN
    settings.GITHUB_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.TACX = {**settings.TACX, "POLL_INTERVAL": 0.0, "DASHBOARD_URL": "https://tacx.example"}
    cache.clear()
    yield server
    server.stop()
    cache.clear()


@pytest.fixture
def github_repo(db, standin, tmp_path):
    """octo/sample registered as a GitHub repository whose clone URL is a bare repository on
    disk (branches are pushed there) and whose workflow runs the command-provider scripts."""
    from conftest import make_origin_and_clone

    from pipeline.models import Repository

    files = {"README.md": "# sample\n", "greeter.py": "def greet(name):\n    return f'Hello {name}'\n", ".tac/workflow.yaml": command_workflow()}
    origin, _clone = make_origin_and_clone(tmp_path, "sample", files)
    return Repository.objects.create(
        kind=Repository.Kind.GITHUB, full_name="octo/sample", clone_url=str(origin), default_branch="main", trigger_label="rpi-auto"
    )


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    import hashlib as _hashlib
    import hmac as _hmac

    return "sha256=" + _hmac.new(secret.encode(), body, _hashlib.sha256).hexdigest()
