"""Run one task on a local repository from start to finish, showing progress live.

    manage.py run_task --repo PATH --title "Add a greeting" --body "..."

Exits 0 only when every stage succeeded; the exit status, the output and the database agree
because all three are read from the same rows.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connection
from django.db.models import Max

from pipeline import git, jobs, services
from pipeline.models import Repository, Stage, StageResult, Task


class Command(BaseCommand):
    help = "Create a task for a local repository and run its whole pipeline in this process."

    def add_arguments(self, parser):
        parser.add_argument("--repo", required=True, help="Path of a local git repository (its `origin` receives the branch)")
        parser.add_argument("--title", required=True)
        parser.add_argument("--body", default="")
        parser.add_argument("--issue", type=int, help="Issue number (default: the next free one)")
        parser.add_argument("--branch", default="", help="Base branch (default: the repository's current branch)")
        parser.add_argument("--quiet-progress", action="store_true", help="Print only the final summary")

    def handle(self, *args, **opts):
        path = Path(opts["repo"]).expanduser().resolve()
        if not (path / ".git").exists():
            raise CommandError(f"--repo {path}: not a git repository (no .git)")
        repository = self.local_repository(path, opts["branch"])
        issue = opts["issue"] or (Task.objects.filter(repository=repository).aggregate(n=Max("issue_number"))["n"] or 0) + 1
        task, created = services.task_create(
            repository=repository, issue_number=issue, title=opts["title"], body=opts["body"], trigger_source="cli"
        )
        if not created:
            raise CommandError(f"issue #{issue} of {repository} already has an active task ({task.pk}, {task.status})")
        self.stdout.write(f"Task {task.pk}: {repository.full_name}#{issue} {task.title!r}")
        services.task_dispatch(task=task, enqueue=False)
        stop = threading.Event()
        progress = None
        if not opts["quiet_progress"]:
            progress = threading.Thread(target=self.show_progress, args=(task.pk, stop), daemon=True)
            progress.start()
        try:
            task = jobs.task_run_inline(task=task)
        finally:
            stop.set()
            if progress:
                progress.join(timeout=5)
        self.summary(task)
        if task.status != Task.Status.SUCCEEDED:
            raise SystemExit(1)

    def local_repository(self, path: Path, branch: str) -> Repository:
        branch = branch or git.run(["rev-parse", "--abbrev-ref", "HEAD"], cwd=path)
        repository, _ = Repository.objects.get_or_create(
            kind=Repository.Kind.LOCAL,
            full_name=path.name,
            defaults={"local_path": str(path), "default_branch": branch},
        )
        if repository.local_path != str(path) or repository.default_branch != branch:
            repository.local_path, repository.default_branch = str(path), branch
            repository.save(update_fields=["local_path", "default_branch"])
        return repository

    def show_progress(self, task_id: int, stop: threading.Event) -> None:
        """Poll the tables (the same truth the dashboard shows) and print what changed."""
        last = None
        started = time.monotonic()
        try:
            while not stop.wait(0.5):
                close_old_connections()
                key, line = self.progress_line(task_id, time.monotonic() - started)
                if key and key != last:
                    self.stdout.write(line)
                    last = key
        finally:
            connection.close()

    def progress_line(self, task_id: int, elapsed: float) -> tuple[tuple | None, str]:
        """(what changed, the line to print) for the running stage; (None, "") when idle."""
        stage = Stage.objects.filter(task_id=task_id, status=Stage.Status.RUNNING).first()
        if stage is None:
            return None, ""
        result = StageResult.objects.filter(stage=stage).order_by("-attempt").first()
        tokens = result.total_tokens if result else 0
        cost = result.cost_usd if result else 0
        events = result.events.count() if result else 0
        line = f"  [{elapsed:6.1f}s] {stage.name:<12} attempt {stage.attempts}  events {events:>4}  tokens {tokens:>9,}  ${cost:.4f}"
        return (stage.pk, stage.attempts, events, tokens), line

    def summary(self, task: Task) -> None:
        self.stdout.write("")
        self.stdout.write(f"{'stage':<12} {'attempt':>7} {'outcome':<16} {'secs':>6} {'tokens':>9} {'cost $':>9}  error")
        for r in StageResult.objects.filter(task=task).select_related("stage").order_by("id"):
            secs = f"{r.duration_seconds:.1f}" if r.duration_seconds is not None else "-"
            self.stdout.write(
                f"{r.stage.name:<12} {r.attempt:>7} {r.outcome:<16} {secs:>6} {r.total_tokens:>9,} {r.cost_usd:>9.4f}  {r.error[:100]}"
            )
        self.stdout.write(f"Task {task.pk} {task.status}: tokens {task.total_tokens:,}, cost ${task.cost_usd:.4f}")
        if task.branch:
            self.stdout.write(f"Branch: {task.branch}" + (f"  PR: {task.pr_url}" if task.pr_url else ""))
        if task.status != Task.Status.SUCCEEDED:
            self.stderr.write(f"Pipeline {task.status}: {task.status_reason}")
