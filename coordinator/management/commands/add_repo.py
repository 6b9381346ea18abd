"""`manage.py add_repo OWNER/NAME [--label L] [--max-concurrent N] [--local PATH] [--clone-url URL] [--memory-auto-accept on|off]
[--forge github|gitlab] [--forge-url URL] [--tracker github|gitlab|linear|jira] [--tracker-setting KEY=VALUE ...]`:
register a repository (or update the options given for one already registered).

`--forge` names where the code lives (default github); `--forge-url` a self-hosted GitLab;
`--tracker` where the issues come from when not the forge, with its `--tracker-setting`s
(e.g. `team=ENG`, `jql=...`). Tokens are never options: they come from the environment."""

from __future__ import annotations

import re
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from pipeline import repos, services
from pipeline.models import Repository

FULL_NAME = repos.GITHUB_FULL_NAME
# GitLab projects live in nested groups: group/subgroup/project.
GITLAB_PATH = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*(/[A-Za-z0-9_.][A-Za-z0-9_.-]*)+$")


class Command(BaseCommand):
    help = "Register a GitHub repository (OWNER/NAME) or, with --local, a git repository on disk."

    def add_arguments(self, parser) -> None:
        parser.add_argument("full_name", help="OWNER/NAME on GitHub, or a name for a local repository")
        parser.add_argument("--label", help="Trigger label (default rpi-auto)")
        parser.add_argument("--max-concurrent", type=int, help="Tasks that may run at once for this repository (default 2)")
        parser.add_argument("--local", metavar="PATH", help="Use the git repository at PATH (no GitHub)")
        parser.add_argument("--clone-url", help="Where to clone from and push to (default https://github.com/OWNER/NAME.git)")
        parser.add_argument("--default-branch", help="Base branch of the pull requests (default main)")
        parser.add_argument(
            "--memory-auto-accept",
            choices=["on", "off"],
            help="on: use the memory entries this repository's own tasks propose without a maintainer accepting them (default off)",
        )

        parser.add_argument("--forge", choices=["github", "gitlab"], help="Where the code lives and PRs/MRs go (default github)")
        parser.add_argument("--forge-url", help="Base URL of a self-hosted GitLab (default GITLAB_URL, https://gitlab.com)")
        parser.add_argument(
            "--tracker", choices=["github", "gitlab", "linear", "jira"], help="Where the issues come from, when not the forge"
        )
        parser.add_argument(
            "--tracker-setting",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="A setting of the tracker (repeatable), e.g. team=ENG",
        )

    def handle(self, *args, **options) -> None:
        full_name = options["full_name"].strip()
        local = options["local"]
        if local:
            try:
                path = repos.local_git_repository(str(Path(local).expanduser().resolve()))
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            kind, local_path = Repository.Kind.LOCAL, str(path)
        elif options["forge"] == "gitlab":
            if not GITLAB_PATH.match(full_name):
                raise CommandError(f"{full_name!r} is not a GitLab project path (GROUP/[SUBGROUP/]PROJECT)")
            kind, local_path = Repository.Kind.GITLAB, ""
        else:
            if not FULL_NAME.match(full_name):
                raise CommandError(f"{full_name!r} is not OWNER/NAME")
            kind, local_path = Repository.Kind.GITHUB, ""
        forge_url = (options["forge_url"] or "").strip()
        if forge_url and (kind != Repository.Kind.GITLAB or not re.match(r"^https?://[^/\s]+(/\S*)?$", forge_url)):
            raise CommandError("--forge-url must be an http(s) URL, and only with --forge gitlab")
        tracker_settings = {}
        for item in options["tracker_setting"]:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise CommandError(f"--tracker-setting {item!r} is not KEY=VALUE")
            tracker_settings[key.strip()] = value.strip()
        if problem := services.tracker_settings_problem(tracker_settings):
            raise CommandError(problem)
        if options["max_concurrent"] is not None and options["max_concurrent"] < 1:
            raise CommandError("--max-concurrent must be at least 1")
        repository, created = services.repository_add(
            full_name=full_name,
            kind=kind,
            local_path=local_path,
            clone_url=options["clone_url"] or "",
            default_branch=options["default_branch"],
            trigger_label=options["label"],
            max_concurrent_tasks=options["max_concurrent"],
            memory_auto_accept=None if options["memory_auto_accept"] is None else options["memory_auto_accept"] == "on",
            forge_url=forge_url,
            tracker_kind=options["tracker"],
            tracker_settings=tracker_settings or None,
        )
        verb = "Added" if created else "Updated"
        self.stdout.write(
            f"{verb} {repository.kind} repository {repository.full_name} (label {repository.trigger_label!r}, "
            + (f"issues from {repository.tracker}, " if repository.tracker != repository.kind else "")
            + f"at most {repository.max_concurrent_tasks} at once"
            + (", memory entries of its own tasks accepted automatically)" if repository.memory_auto_accept else ")")
        )
