"""The demo: one task on the bundled sample repository, run by the real `claude` CLI against the
scripted model server on loopback (no network, no API key), with its progress shown live.

    manage.py demo

Creates a fresh copy of demo/sample-repo with a bare origin under var/demo/, serves
demo/script.yaml, and runs `run_task` on it. The exit status is run_task's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from pipeline.modelserver import ScriptedModelServer

DEMO_DIR = settings.BASE_DIR / "demo"


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
    help = "Run the demo task (real claude CLI, scripted model server) on a fresh sample repository."

    def add_arguments(self, parser):
        parser.add_argument("--script", default=str(DEMO_DIR / "script.yaml"))

    def handle(self, *args, **opts):
        base = settings.VAR_DIR / "demo" / time.strftime("%Y%m%d-%H%M%S")
        repo = make_sample_repository(base)
        with ScriptedModelServer(opts["script"]) as server:
            os.environ["ANTHROPIC_BASE_URL"] = server.url
            os.environ.setdefault("ANTHROPIC_API_KEY", "tacx-demo-key-not-a-secret")
            self.stdout.write(f"Scripted model server on {server.url}; sample repository {repo}")
            call_command(
                "run_task",
                repo=str(repo),
                title="Add a farewell to the greeter",
                body="greet() says hello; we also need farewell(name) returning 'Goodbye, <name>', with tests.",
                stdout=self.stdout,
                stderr=self.stderr,
            )
