"""The demo: the whole stack on the embedded default (SQLite), and one task on the bundled
sample repository going through every stage live.

    manage.py demo                  # stack keeps running until Ctrl-C
    manage.py demo --exit-when-done # stop the stack when the task has finished (CI, benchmarks)
    manage.py demo --inline         # no stack: run_task in this process

The stack is the Procfile under honcho: daphne (dashboard, API, websockets), a django-q2 cluster
(stage jobs) and the coordinator (dispatch, reaping). The agent is the real `claude` CLI talking
to the scripted model server (demo/script.yaml) on loopback: no network, no API key needed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from pipeline import services
from pipeline.models import Repository, StageResult, Task
from pipeline.modelserver import ScriptedModelServer

DEMO_DIR = settings.BASE_DIR / "demo"
TITLE = "Add a farewell to the greeter"
BODY = "greet() says hello; we also need farewell(name) returning 'Goodbye, <name>', with tests."


def make_sample_repository(base: Path) -> Path:
    """A clone of a fresh bare origin holding demo/sample-repo as its first commit."""
    origin, clone = base / "origin.git", base / "sample-repo"
    env = {**os.environ, "GIT_AUTHOR_NAME": "TAC-X demo", "GIT_AUTHOR_EMAIL": "demo@tacx.invalid",
           "GIT_COMMITTER_NAME": "TAC-X demo", "GIT_COMMITTER_EMAIL": "demo@tacx.invalid"}

    def git(*args: str, cwd: Path = base) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    base.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "--bare", "-b", "main", str(origin))
    shutil.copytree(DEMO_DIR / "sample-repo", clone)
    git("init", "-q", "-b", "main", cwd=clone)
    git("add", "-A", cwd=clone)
    git("commit", "-q", "-m", "Initial commit", cwd=clone)
    git("remote", "add", "origin", str(origin), cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)
    return clone


class Command(BaseCommand):
    help = "Start the whole stack and run the demo task on a fresh sample repository."

    def add_arguments(self, parser):
        parser.add_argument("--script", default=str(DEMO_DIR / "script.yaml"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("TACX_PORT", "8000")))
        parser.add_argument("--exit-when-done", action="store_true")
        parser.add_argument("--inline", action="store_true", help="Run the task in this process, without the stack")

    def handle(self, *args, **opts):
        base = settings.VAR_DIR / "demo" / time.strftime("%Y%m%d-%H%M%S")
        repo_path = make_sample_repository(base)
        with ScriptedModelServer(opts["script"]) as server:
            os.environ["ANTHROPIC_BASE_URL"] = server.url
            os.environ.setdefault("ANTHROPIC_API_KEY", "tacx-demo-key-not-a-secret")
            self.stdout.write(f"Scripted model server on {server.url}; sample repository {repo_path}")
            if opts["inline"]:
                call_command("run_task", repo=str(repo_path), title=TITLE, body=BODY, stdout=self.stdout, stderr=self.stderr)
                return
            self.run_stack(repo_path, opts)

    def admin_login(self) -> None:
        """Create the demo admin once and print its password once (it is not stored anywhere)."""
        User = get_user_model()
        if User.objects.filter(username="admin").exists():
            self.stdout.write("Log in as 'admin' (password printed on the first run; `manage.py changepassword admin` to reset).")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "admin@localhost", password)
        self.stdout.write(self.style.SUCCESS(f"Admin login created: admin / {password}  (shown once)"))

    def run_stack(self, repo_path: Path, opts) -> None:
        self.admin_login()
        port = opts["port"]
        env = {**os.environ, "TACX_PORT": str(port), "TACX_DASHBOARD_URL": f"http://127.0.0.1:{port}"}
        honcho = Path(sys.executable).with_name("honcho")
        stack = subprocess.Popen(
            [str(honcho), "-f", str(settings.BASE_DIR / "Procfile"), "start"],
            cwd=settings.BASE_DIR,
            env=env,
            start_new_session=True,
        )
        try:
            repository, _ = Repository.objects.update_or_create(
                kind=Repository.Kind.LOCAL,
                full_name="demo/sample-repo",
                defaults={"local_path": str(repo_path), "default_branch": "main", "enabled": True},
            )
            number = (Task.objects.filter(repository=repository).order_by("-issue_number").values_list("issue_number", flat=True).first() or 0) + 1
            task, _ = services.task_create(repository=repository, issue_number=number, title=TITLE, body=BODY, trigger_source="cli")
            self.stdout.write(self.style.SUCCESS(f"Dashboard: http://127.0.0.1:{port}/tasks/{task.pk}/  (admin: http://127.0.0.1:{port}/admin/)"))
            task = self.follow(task, stack)
            if opts["exit_when_done"]:
                if task.status != Task.Status.SUCCEEDED:
                    raise CommandError(f"demo task {task.status}: {task.status_reason}")
                return
            self.stdout.write("The stack keeps running; Ctrl-C stops it.")
            stack.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if stack.poll() is None:
                os.killpg(stack.pid, signal.SIGTERM)
                try:
                    stack.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(stack.pid, signal.SIGKILL)

    def follow(self, task: Task, stack: subprocess.Popen, timeout: float = 300) -> Task:
        """Print each attempt as it finishes until the task does (what the dashboard shows live)."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stack.poll() is not None:
                raise CommandError(f"the stack exited with code {stack.returncode}")
            task.refresh_from_db()
            for r in StageResult.objects.filter(task=task).exclude(outcome="running").exclude(pk__in=seen).select_related("stage"):
                seen.add(r.pk)
                self.stdout.write(f"  {r.stage.name:<12} {r.outcome:<10} {r.duration_seconds or 0:5.1f}s  tokens {r.total_tokens:>7,}  ${r.cost_usd:.4f}  {r.error[:80]}")
            if task.status in Task.FINISHED:
                self.stdout.write(f"Task {task.pk} {task.status}: tokens {task.total_tokens:,}, ${task.cost_usd:.4f}, branch {task.branch}")
                return task
            time.sleep(0.5)
        raise CommandError(f"demo task still {task.status} after {timeout:.0f} s")
