"""The demo: the whole stack on the embedded default (SQLite), and one task on the bundled
sample repository going through every stage live.

    manage.py demo                  # stack keeps running until Ctrl-C
    manage.py demo --port 8001      # another port (or TACX_PORT=8001)
    manage.py demo --pace 0         # no pauses between the model's turns (tests)
    manage.py demo --verbose        # the access log and INFO logs of every process
    manage.py demo --exit-when-done # stop the stack when the task has finished (CI, benchmarks)
    manage.py demo --inline         # no stack: run_task in this process
    manage.py demo --github         # the GitHub path on a loopback stand-in: issue -> draft PR -> review -> round

The model's turns are paced (``--pace`` seconds each, 5 by default) so a person can log in and
watch the task go through its stages in about a minute. A busy port is refused before anything
starts. A task left active by an interrupted run is cancelled when the next run starts (its
sample repository is gone), and Ctrl-C cancels the task of this run.

With `--github` the task comes from GitHub instead, played by the GitHub stand-in on loopback
(`harness.demo_github`): a labelled issue becomes a task and a draft pull request, and a review
on it becomes a round that pushes to the same pull request. No GitHub account is needed.

The stack is the Procfile under honcho: daphne (dashboard, API, websockets), a django-q2 cluster
(stage jobs) and the coordinator (dispatch, reaping). The agent is the real `claude` CLI talking
to the scripted model server (demo/script.yaml) on loopback: no network, no API key needed.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from harness.cli_runs import stop_process_group
from harness.demo_github import GitHubDemo
from harness.modelserver import ScriptedModelServer
from pipeline import services
from pipeline.models import Repository, Round, StageResult, Task

DEMO_DIR = settings.BASE_DIR / "demo"
TITLE = "Add a farewell to the greeter"
BODY = "greet() says hello; we also need farewell(name) returning 'Goodbye, <name>', with tests."
DEMO_REPOSITORY = "demo/sample-repo"
DEFAULT_PACE = 5.0  # seconds per model turn: nine turns and three CLI start-ups make about a minute


def port_problem(port: int, host: str = "127.0.0.1") -> str | None:
    """Why the dashboard cannot listen on `port` (None when it can)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (another demo or server?)"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def paced_script(path: str | Path, pace: float) -> dict:
    """The script with every turn waiting at least `pace` seconds before the model answers."""
    data = yaml.safe_load(Path(path).read_text())
    if pace > 0:
        for conversation in data.get("conversations", []):
            for turn in conversation.get("turns", []):
                turn["delay"] = max(float(turn.get("delay", 0) or 0), pace)
    return data


def with_round(script: dict) -> dict:
    """The script with the GitHub demo's round (demo/round.yaml) in front of its conversations."""
    extra = yaml.safe_load((DEMO_DIR / "round.yaml").read_text())
    return {**script, "conversations": [*extra["conversations"], *script.get("conversations", [])]}


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
        parser.add_argument("--pace", type=float, default=DEFAULT_PACE, help="Seconds per model turn (0: as fast as possible)")
        parser.add_argument("--verbose", action="store_true", help="Access log and INFO logs of every process")
        parser.add_argument("--exit-when-done", action="store_true")
        parser.add_argument("--inline", action="store_true", help="Run the task in this process, without the stack")
        parser.add_argument("--github", action="store_true", help="The GitHub path on a loopback stand-in: issue, draft PR, review, round")

    def handle(self, *args, **opts):
        self.password = ""
        if opts["pace"] < 0:
            raise CommandError("--pace must be >= 0 seconds")
        if opts["github"] and opts["inline"]:
            raise CommandError("--github needs the stack (its coordinator polls the stand-in); drop --inline")
        if not opts["inline"]:
            problem = port_problem(opts["port"])
            if problem:
                # Before anything starts: nothing to clean up, nothing left half-done.
                raise CommandError(
                    f"{problem}. Pick another port: `manage.py demo --port {opts['port'] + 1}` "
                    f"(or `TACX_PORT={opts['port'] + 1} make demo`)."
                )
        self.cancel_leftovers()
        base = settings.VAR_DIR / "demo" / time.strftime("%Y%m%d-%H%M%S")
        repo_path = make_sample_repository(base)
        script = paced_script(opts["script"], opts["pace"])
        with ScriptedModelServer(with_round(script) if opts["github"] else script) as server:
            os.environ["ANTHROPIC_BASE_URL"] = server.url
            os.environ.setdefault("ANTHROPIC_API_KEY", "tacx-demo-key-not-a-secret")
            self.stdout.write(f"Scripted model server on {server.url}; sample repository {repo_path}")
            if opts["inline"]:
                call_command("run_task", repo=str(repo_path), title=TITLE, body=BODY, stdout=self.stdout, stderr=self.stderr)
                return
            if opts["github"]:
                demo = GitHubDemo(origin=repo_path.parent / "origin.git", say=self.stdout.write)
                try:
                    demo.cancel_leftovers(lambda task, reason: services.task_cancel(task=task, reason=reason))
                    self.run_stack(repo_path, opts, github=demo)
                finally:
                    demo.stop()
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
        self.password = password
        self.stdout.write(self.style.SUCCESS(f"Admin login created: admin / {password}  (shown once)"))

    def cancel_leftovers(self) -> None:
        """A run that was interrupted may have left its task active; its sample repository is
        replaced now, so that task could only fail later: cancel it, saying why."""
        for task in Task.objects.filter(repository__kind=Repository.Kind.LOCAL, repository__full_name=DEMO_REPOSITORY, status__in=Task.ACTIVE):
            if services.task_cancel(task=task, reason="cancelled: a new demo run started with a fresh sample repository"):
                self.stdout.write(f"Cancelled task {task.pk} left active by an earlier demo run.")

    def login_reminder(self, port: int) -> None:
        where = f"http://127.0.0.1:{port}/"
        if self.password:
            self.stdout.write(self.style.SUCCESS(f"Log in at {where} as admin / {self.password}"))
        else:
            self.stdout.write(f"Log in at {where} as admin (password printed on the first run; `manage.py changepassword admin` to reset).")

    def run_stack(self, repo_path: Path, opts, *, github: GitHubDemo | None = None) -> None:
        self.admin_login()
        port = opts["port"]
        env = {**os.environ, "TACX_PORT": str(port), "TACX_DASHBOARD_URL": f"http://127.0.0.1:{port}"}
        if github is not None:
            env.update(github.stack_env())
        if not opts["verbose"]:
            # The demo's own lines are what matters; the stack speaks up only for warnings.
            env.update({"TACX_ACCESS_LOG": os.devnull, "LOG_LEVEL": "WARNING", "TACX_Q_LOG_LEVEL": "WARNING"})
        task = None
        # `kill`, `timeout` or `docker stop` end the demo like Ctrl-C does: the task is cancelled
        # and the stack (in its own session, so it does not see the signal) is stopped.
        signal.signal(signal.SIGTERM, _interrupt)
        honcho = Path(sys.executable).with_name("honcho")
        stack = subprocess.Popen(
            [str(honcho), "-f", str(settings.BASE_DIR / "Procfile"), "start"],
            cwd=settings.BASE_DIR,
            env=env,
            start_new_session=True,
        )
        self.seen: set[int] = set()
        try:
            if github is not None:
                task = github.open_issue(title=TITLE, stack_alive=lambda: self.check_stack(stack))
            else:
                task = self.local_task(repo_path)
            self.stdout.write(self.style.SUCCESS(f"Dashboard: http://127.0.0.1:{port}/tasks/{task.pk}/  (admin: http://127.0.0.1:{port}/admin/)"))
            task = self.follow(task, stack)
            if github is not None and task.status == Task.Status.SUCCEEDED:
                round_ = github.review(task, stack_alive=lambda: self.check_stack(stack))
                round_ = self.follow_round(round_, stack)
                for body in github.replies(round_):
                    lines = [line for line in body.splitlines() if line.strip() and not line.startswith("<!--")]
                    self.stdout.write(f"TAC-X replied on the review thread: {(lines or [''])[0][:160]}")
                if opts["exit_when_done"] and round_.status != Round.Status.SUCCEEDED:
                    raise CommandError(f"demo round {round_.status}: {round_.reason}")
            self.login_reminder(port)
            if opts["exit_when_done"]:
                if task.status != Task.Status.SUCCEEDED:
                    raise CommandError(f"demo task {task.status}: {task.status_reason}")
                return
            self.stdout.write(f"The result: http://127.0.0.1:{port}/tasks/{task.pk}/ . The stack keeps running; Ctrl-C stops it.")
            stack.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if task is not None and Task.objects.filter(pk=task.pk, status__in=Task.ACTIVE).exists():
                services.task_cancel(task=task, reason="cancelled: the demo was stopped before the task finished")
                self.stdout.write(f"Task {task.pk} cancelled (the demo stopped before it finished).")
            stop_process_group(stack, timeout=15)

    def local_task(self, repo_path: Path) -> Task:
        repository, _ = Repository.objects.update_or_create(
            kind=Repository.Kind.LOCAL,
            full_name=DEMO_REPOSITORY,
            defaults={"local_path": str(repo_path), "default_branch": "main", "enabled": True},
        )
        number = (Task.objects.filter(repository=repository).order_by("-issue_number").values_list("issue_number", flat=True).first() or 0) + 1
        task, _ = services.task_create(repository=repository, issue_number=number, title=TITLE, body=BODY, trigger_source="cli")
        return task

    def check_stack(self, stack: subprocess.Popen) -> None:
        if stack.poll() is not None:
            raise CommandError(f"the stack exited with code {stack.returncode}")

    def print_attempts(self, task: Task) -> None:
        """Each attempt of `task` that finished since the last call, one line each."""
        for r in StageResult.objects.filter(task=task).exclude(outcome="running").exclude(pk__in=self.seen).select_related("stage"):
            self.seen.add(r.pk)
            self.stdout.write(f"  {r.stage.name:<12} {r.outcome:<10} {r.duration_seconds or 0:5.1f}s  tokens {r.total_tokens:>7,}  ${r.cost_usd:.4f}  {r.error[:80]}")

    def follow_round(self, round_: Round, stack: subprocess.Popen, timeout: float = 300) -> Round:
        """Print the round's attempts until it ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_stack(stack)
            round_.refresh_from_db()
            self.print_attempts(round_.task)
            if round_.status not in (Round.Status.QUEUED, Round.Status.RUNNING):
                self.stdout.write(f"Round {round_.pk} {round_.status}: ${round_.cost_usd:.4f}, pushed to PR #{round_.task.pr_number}  {round_.reason[:120]}")
                return round_
            time.sleep(0.5)
        raise CommandError(f"demo round still {round_.status} after {timeout:.0f} s")

    def follow(self, task: Task, stack: subprocess.Popen, timeout: float = 300) -> Task:
        """Print each attempt as it finishes until the task does (what the dashboard shows live)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_stack(stack)
            task.refresh_from_db()
            self.print_attempts(task)
            if task.status in Task.FINISHED:
                self.stdout.write(f"Task {task.pk} {task.status}: tokens {task.total_tokens:,}, ${task.cost_usd:.4f}, branch {task.branch}")
                return task
            time.sleep(0.5)
        raise CommandError(f"demo task still {task.status} after {timeout:.0f} s")


def _interrupt(signum, frame):
    raise KeyboardInterrupt
