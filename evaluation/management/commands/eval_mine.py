"""Mine a repository's history into evaluation instances (SWE-bench JSONL): a local repository's
commits, or a GitHub repository's merged pull requests through the forge client.

    manage.py eval_mine --repo PATH --since 2025-01-01 --limit 20 --output instances.jsonl
    manage.py eval_mine --repo owner/name --since 2025-01-01 --limit 20 --output instances.jsonl

Each dropped candidate is listed on stderr with its reason (and in --dropped FILE as JSONL).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from pipeline import git, repos
from pipeline.github import GitHubClient, GitHubError
from pipeline.workflow import WORKFLOW_PATH, WorkflowError, load_workflow_text

from ... import forge_mining
from ...instances import Instance, to_jsonl
from ...mining import Drop, mine
from ...testbed import DEFAULT_TEST_TIMEOUT, runner_argv


class Command(BaseCommand):
    help = "Find commits that close an issue and change code and tests; write them as SWE-bench instances."

    def add_arguments(self, parser):
        parser.add_argument("--repo", required=True, help="Path of a local git repository, or owner/name of a GitHub repository")
        parser.add_argument("--clone-url", default="", help="With owner/name: where git fetches it (default: the registered repository's, else https://github.com/owner/name.git)")
        parser.add_argument("--since", default="", help="Only commits after this date (git's --since, e.g. 2025-01-01)")
        parser.add_argument("--limit", type=int, default=10, help="Stop after this many instances (default 10)")
        parser.add_argument("--rev", default="HEAD", help="The branch or commit whose history is mined (default HEAD)")
        parser.add_argument("--workflow", default="", help="Workflow YAML whose setup hook and test environment are used (default: the repository's .tac/workflow.yaml)")
        parser.add_argument("--test-runner", default="", help="The test runner; test ids are appended as arguments (default: python -m pytest -rA -p no:cacheprovider --continue-on-collection-errors)")
        parser.add_argument("--test-timeout", type=float, default=DEFAULT_TEST_TIMEOUT, help="Seconds per test (default 120)")
        parser.add_argument("--issues", default="", help='JSON file {"12": {"title": ..., "body": ...}}: issue texts for the problem statements')
        parser.add_argument("--output", default="-", help="Where the JSONL goes (default: stdout)")
        parser.add_argument("--dropped", default="", help="Write the dropped candidates and their reasons here (JSONL)")

    def handle(self, *args, **opts):
        full_name = opts["repo"] if forge_mining.is_full_name(opts["repo"]) and not Path(opts["repo"]).exists() else ""
        if full_name:
            try:
                repository = forge_mining.github_repository(full_name, clone_url=opts["clone_url"])
                path = forge_mining.mirror_of(repository)
            except git.GitError as exc:
                raise CommandError(f"--repo {full_name}: cannot fetch it: {exc}") from None
        else:
            try:
                path = repos.local_git_repository(str(Path(opts["repo"]).expanduser().absolute()))
            except ValueError as exc:
                raise CommandError(f"--repo: {exc}") from None
        if opts["since"]:
            try:
                datetime.fromisoformat(opts["since"])
            except ValueError:
                raise CommandError(f"--since: must be a date such as 2025-01-31 (or 2025-01-31T12:00), got {opts['since']!r}") from None
        if opts["limit"] < 1:
            raise CommandError(f"--limit: must be at least 1, got {opts['limit']}")
        if opts["test_timeout"] <= 0:
            raise CommandError(f"--test-timeout: must be more than 0, got {opts['test_timeout']}")
        try:
            runner = list(runner_argv(opts["test_runner"]))
        except ValueError as exc:
            raise CommandError(f"--test-runner: {exc}") from None
        if full_name:  # the workflow file is read at the default branch as last fetched
            fetched = f"refs/remotes/origin/{repository.default_branch}"
            opts["rev"] = fetched if git.succeeds(["rev-parse", "--verify", "--quiet", fetched], cwd=path) else "HEAD"
        if not git.succeeds(["rev-parse", "--verify", "--quiet", f"{opts['rev']}^{{commit}}"], cwd=path):
            raise CommandError(f"--rev: {opts['rev']!r} is not a commit of {path}")
        workflow = self.workflow(path, opts)
        issue_texts = self.issue_texts(opts["issues"])

        def report(found: Instance | Drop) -> None:
            if isinstance(found, Drop):
                issues = ", ".join(f"#{n}" for n in found.issues)
                self.stderr.write(f"dropped {found.commit[:12]} ({issues}): {found.reason}")
            else:
                self.stderr.write(f"instance {found.instance_id}: FAIL_TO_PASS {len(found.FAIL_TO_PASS)}, PASS_TO_PASS {len(found.PASS_TO_PASS)}")

        found_in, texts = None, issue_texts
        if full_name:
            client = GitHubClient()
            found_in = forge_mining.pull_candidates(client, full_name=full_name, mirror=path, since=opts["since"])
            texts = issue_texts or forge_mining.issue_texts(client, full_name)
        try:
            instances, dropped = mine(
                path, workflow=workflow, runner=runner, since=opts["since"], limit=opts["limit"], rev=opts["rev"],
                test_timeout=opts["test_timeout"], issue_texts=texts, on_result=report, found_in=found_in, repo_name=full_name,
            )
        except GitHubError as exc:
            raise CommandError(f"--repo {full_name}: GitHub: {exc}") from None
        text = to_jsonl(instances)
        if opts["output"] in ("", "-"):
            sys.stdout.write(text)
        else:
            Path(opts["output"]).write_text(text, encoding="utf-8")
        if opts["dropped"]:
            Path(opts["dropped"]).write_text("".join(json.dumps(d.to_json()) + "\n" for d in dropped), encoding="utf-8")
        self.stderr.write(f"{len(instances)} instance(s), {len(dropped)} candidate(s) dropped")

    def workflow(self, path: Path, opts):
        try:
            if opts["workflow"]:
                source = Path(opts["workflow"])
                if not source.is_file():
                    raise CommandError(f"--workflow: {source} is not a file")
                return load_workflow_text(source.read_bytes(), source=str(source))
            raw = git.read_blob(path, f"{opts['rev']}:{WORKFLOW_PATH}", max_bytes=1_000_000)
            return load_workflow_text(raw, source=f"{path}:{WORKFLOW_PATH}")
        except WorkflowError as exc:
            raise CommandError(str(exc)) from None

    def issue_texts(self, name: str) -> dict[int, dict]:
        if not name:
            return {}
        try:
            data = json.loads(Path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CommandError(f"--issues: {name}: {exc}") from None
        if not isinstance(data, dict):
            raise CommandError(f"--issues: {name}: must be a JSON object of issue number -> {{title, body}}")
        texts = {}
        for key, value in data.items():
            if not str(key).isdigit() or not isinstance(value, dict):
                raise CommandError(f"--issues: {name}: entry {key!r} must be an issue number -> {{title, body}}")
            texts[int(key)] = value
        return texts
