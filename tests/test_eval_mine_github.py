"""`manage.py eval_mine --repo owner/name`: a GitHub repository mined through the forge client.
The GitHub stand-in on loopback serves the real small project (tests/eval_project.py) over git
HTTP (`git http-backend`, token in a header) and its merged pull requests over REST; the tests
run in the sandbox before and after each fix, as for a local repository."""

from __future__ import annotations

import json
import shlex

import pytest
from django.core.management import CommandError, call_command
from github_standin import TOKEN, GitHubStandIn

from evaluation import services
from evaluation.instances import parse_jsonl
from pipeline.models import Repository
from tests import eval_project

pytestmark = pytest.mark.django_db

ISSUES = {
    1: ("add() subtracts", "add(2, 3) gives -1 instead of 5."),
    2: ("Parse ORDER BY words", "We need ordering('name ASC NULLS FIRST')."),
    3: ("countdown never ends", "countdown(-1) never returns."),
    4: ("Needs Python 9", "Use what Python 9 brings."),
}


@pytest.fixture
def github_project(tmp_path, settings):
    """octo/calc on the stand-in: issues #1-#4, and for #1 and #2 a merged pull request whose
    body closes it and whose merge commit is the fix of tests/eval_project.py; plus a PR closed
    unmerged, and a merged PR whose "Fixes" names another pull request."""
    repo, fixes = eval_project.build(tmp_path / "work")
    root = tmp_path / "gitroot" / "octo"
    root.mkdir(parents=True)
    (tmp_path / "work" / "calc-origin.git").rename(root / "calc.git")
    server = GitHubStandIn(token=TOKEN, git_root=tmp_path / "gitroot").start()
    server.add_repo("octo/calc", permissions={"alice": "write"})
    settings.GITHUB_API_URL, settings.GITHUB_TOKEN, settings.GITHUB_APP_ID = server.url, TOKEN, ""
    for number, (title, body) in ISSUES.items():
        server.add_issue("octo/calc", number=number, title=title, body=body)
    pulls = {}
    for number in (1, 2):  # (#3's looping test and #4's trap are mined locally in test_eval_mine.py)
        status, pull, _ = server.create_pull(
            "octo/calc",
            {"head": f"fix-{number}", "base": "main", "title": f"Fix for #{number}", "body": f"Some words.\n\nFixes #{number}"},
        )
        assert status == 201
        server.close_pull("octo/calc", pull["number"], actor="alice", merge=True, merge_commit_sha=fixes[number])
        pulls[number] = pull["number"]
    _, unmerged, _ = server.create_pull("octo/calc", {"head": "abandoned", "base": "main", "title": "Try", "body": "Fixes #1"})
    server.close_pull("octo/calc", unmerged["number"], actor="alice")
    _, of_a_pull, _ = server.create_pull(
        "octo/calc", {"head": "meta", "base": "main", "title": "Tidy", "body": f"Fixes #{unmerged['number']}"}
    )
    server.close_pull(
        "octo/calc", of_a_pull["number"], actor="alice", merge=True, merge_commit_sha=eval_project.git(repo, "rev-parse", "HEAD")
    )
    Repository.objects.create(
        kind=Repository.Kind.GITHUB, full_name="octo/calc", clone_url=f"{server.url}/git/octo/calc.git", enabled=False
    )
    yield server, repo, fixes, pulls, of_a_pull["number"]
    server.stop()


def test_merged_pull_requests_that_close_an_issue_become_instances(tmp_path, github_project, capsys):
    server, repo, fixes, pulls, of_a_pull = github_project
    workflow = tmp_path / "eval-workflow.yaml"
    workflow.write_text(eval_project.WORKFLOW)
    out, dropped_file = tmp_path / "instances.jsonl", tmp_path / "dropped.jsonl"
    call_command(
        "eval_mine",
        "--repo",
        "octo/calc",
        "--limit",
        "10",
        "--workflow",
        str(workflow),
        "--test-timeout",
        "3",
        "--test-runner",
        shlex.join(eval_project.RUNNER),
        "--output",
        str(out),
        "--dropped",
        str(dropped_file),
    )
    instances, errors = parse_jsonl(out.read_text(), source=str(out))
    assert errors == []
    by_issue = {i.extra["issue_numbers"][0]: i for i in instances}
    assert sorted(by_issue) == [1, 2]
    for number, instance in by_issue.items():
        # SWE-bench's naming and fields for a GitHub repository.
        assert instance.instance_id == f"octo__calc-{pulls[number]}" and instance.repo == "octo/calc"
        assert instance.extra["pull_number"] == pulls[number] and instance.extra["commit"] == fixes[number]
        assert list(instance.FAIL_TO_PASS) == eval_project.FAIL_TO_PASS[number], number
        assert instance.base_commit == eval_project.git(repo, "rev-parse", f"{fixes[number]}^")
        assert "tests/test_calc.py" in instance.test_patch and "a/calc.py" in instance.patch and "tests/" not in instance.patch
        # The problem statement is the issue's own text, asked of GitHub.
        title, body = ISSUES[number]
        assert instance.problem_statement == f"{title}\n\n{body}"
    dropped = {tuple(d["issues"]): d["reason"] for d in map(json.loads, dropped_file.read_text().splitlines())}
    assert dropped[(of_a_pull - 1,)] == f"PR #{of_a_pull} closes no issue: #{of_a_pull - 1} are pull requests or do not exist"
    assert len(dropped) == 1  # the PR closed unmerged is no candidate at all
    # The commits came over git HTTP with the token in a header, the PRs over REST.
    assert any(r["path"].endswith("git-upload-pack") and r["identity"] for r in server.git_requests)
    assert "octo__calc-" in capsys.readouterr().err

    # eval_run finds the commits of an owner/name instance in TAC-X's mirror: its copy holds
    # the base_commit and the test_patch applies there.
    instance = by_issue[2]
    source = services.source_path(instance)
    copy = services.instance_repository(instance, source=source)
    services.check_test_patch(copy, instance, services.full_base(copy))
    assert services.full_base(copy) == instance.base_commit


def test_a_repository_that_cannot_be_fetched_is_a_clear_error(tmp_path, github_project):
    server = github_project[0]
    with pytest.raises(CommandError, match="--repo octo/missing: cannot fetch it: .*not found"):
        call_command("eval_mine", "--repo", "octo/missing", "--clone-url", f"{server.url}/git/octo/missing.git")


def test_since_bounds_the_pull_requests_by_their_merge_time(github_project):
    from evaluation import forge_mining
    from pipeline.github import GitHubClient

    _, _, fixes, pulls, _ = github_project
    mirror = forge_mining.mirror_of(forge_mining.github_repository("octo/calc"))
    client = GitHubClient()
    found = list(forge_mining.pull_candidates(client, full_name="octo/calc", mirror=mirror, since="2000-01-01"))
    # The merged PRs, most recently updated first; the one closed unmerged is not there.
    assert [getattr(c, "pull", None) for c in found if hasattr(c, "pull")] == [pulls[2], pulls[1]]
    assert [c.commit for c in found if hasattr(c, "pull")] == [fixes[2], fixes[1]]
    assert list(forge_mining.pull_candidates(client, full_name="octo/calc", mirror=mirror, since="2999-01-01")) == []
