"""The evaluation demo: the bundled sample (demo/eval-sample/) mined and run end to end.

    manage.py eval_demo                       # build the sample, eval_mine it, eval_run it, print the figures
    manage.py eval_demo --compare             # also candidates: 3 (workflow-candidates.yaml) on the same instances
    manage.py eval_demo --sample-only DIR     # only write the sample repository at DIR (to try the commands by hand)

The sample is a small Python project ("shop") whose history has four commits that fix an issue
with a test, and one that closes an issue with a README change (dropped by the miner). The run
uses demo/eval-sample/workflow.yaml: one building stage by the real `claude` CLI, talking to the
scripted model server (demo/eval-sample/script.yaml) on loopback, so no API key and no network:
two right fixes, one wrong fix and one agent that changes nothing. The tests run in the agent
sandbox with this Python's pytest. Everything it writes goes under var/eval-demo/<time>/; the run
shows at /evaluations/.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import yaml
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from harness.eval_sample import SAMPLE_DIR, SampleError, build
from harness.modelserver import ScriptedModelServer

# This interpreter's pytest, without the plugins of TAC-X's own environment.
RUNNER = [
    "env",
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1",
    sys.executable,
    "-m",
    "pytest",
    "-rA",
    "-p",
    "no:cacheprovider",
    "--continue-on-collection-errors",
]


class Command(BaseCommand):
    help = "Mine the bundled evaluation sample and run it with the real claude CLI against the scripted model server."

    def add_arguments(self, parser):
        parser.add_argument("--sample-only", metavar="DIR", default="", help="Only write the sample repository at DIR")
        parser.add_argument("--concurrency", type=int, default=2, help="Instances at once (default 2)")
        parser.add_argument("--test-timeout", type=float, default=20, help="Seconds per test (default 20)")
        parser.add_argument(
            "--compare", action="store_true", help="Also run workflow-candidates.yaml (candidates: 3) on the same instances"
        )

    def handle(self, *args, **opts):
        if opts["sample_only"]:
            try:
                repo = build(Path(opts["sample_only"]))
            except SampleError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"The sample repository is at {repo}")
            return
        # The sample's tests run with this Python's pytest: let the sandbox read this Python
        # (as the test suite does). On your own repository the setup hook makes the environment.
        settings.TACX = {
            **settings.TACX,
            "SANDBOX_ALLOW_READ": [*settings.TACX.get("SANDBOX_ALLOW_READ", []), sys.prefix, sys.base_prefix],
        }
        base = Path(settings.VAR_DIR) / "eval-demo" / time.strftime("%Y%m%d-%H%M%S")
        repo = build(base / "shop")
        workflow, runner = SAMPLE_DIR / "workflow.yaml", shlex.join(RUNNER)
        instances, dropped = base / "instances.jsonl", base / "dropped.jsonl"
        self.stdout.write(f"Sample repository {repo}; mining its history")
        call_command(
            "eval_mine",
            "--repo",
            str(repo),
            "--workflow",
            str(workflow),
            "--issues",
            str(SAMPLE_DIR / "issues.json"),
            "--test-runner",
            runner,
            "--test-timeout",
            str(opts["test_timeout"]),
            "--output",
            str(instances),
            "--dropped",
            str(dropped),
            stdout=self.stdout,
            stderr=self.stderr,
        )
        script = yaml.safe_load((SAMPLE_DIR / "script.yaml").read_text(encoding="utf-8"))
        with ScriptedModelServer(script) as server:
            os.environ["ANTHROPIC_BASE_URL"] = server.url
            os.environ.setdefault("ANTHROPIC_API_KEY", "tacx-demo-key-not-a-secret")
            self.stdout.write(f"Scripted model server on {server.url}; running the instances")
            compared = ["--workflow", str(SAMPLE_DIR / "workflow-candidates.yaml")] if opts["compare"] else []
            call_command(
                "eval_run",
                str(instances),
                "--workflow",
                str(workflow),
                *compared,
                "--concurrency",
                str(opts["concurrency"]),
                "--test-runner",
                runner,
                "--test-timeout",
                str(opts["test_timeout"]),
                "--name",
                "eval demo (bundled sample)",
                stdout=self.stdout,
                stderr=self.stderr,
            )
        self.stdout.write(
            f"Instances in {instances}; compare runs at /evaluations/ (manage.py eval_export RUN_ID for the JSONL)."
        )
