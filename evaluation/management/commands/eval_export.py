"""Export a run: one JSON line per instance (SWE-bench predictions shape with the outcome and
metrics), or with --report SWE-bench's report (ids per outcome) with the run's figures.

    manage.py eval_export RUN_ID > predictions.jsonl
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from ...models import EvalRun
from ...selectors import export_lines, run_report


class Command(BaseCommand):
    help = "Write an evaluation run as JSONL (SWE-bench predictions with outcomes) or its report."

    def add_arguments(self, parser):
        parser.add_argument("run", type=int)
        parser.add_argument("--report", action="store_true", help="The report (ids per outcome, figures) instead of the lines")

    def handle(self, *args, **opts):
        run = EvalRun.objects.filter(pk=opts["run"]).first()
        if run is None:
            raise CommandError(f"no evaluation run {opts['run']}")
        if opts["report"]:
            self.stdout.write(json.dumps(run_report(run), indent=2))
            return
        for line in export_lines(run):
            self.stdout.write(line)
