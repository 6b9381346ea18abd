"""Run instances (SWE-bench JSONL) through one or more workflows and grade them.

    manage.py eval_run instances.jsonl --workflow A.yaml [--workflow B.yaml] --concurrency K

Each instance runs as a normal task through the normal stage jobs: in this process (K threads,
the default) or, with --queue, as django-q2 jobs of the running workers (`run_workers`; the
coordinator's reaper re-queues the stage of a worker that died). The command waits, grades, and
prints progress per run ("37/120 done, 14 resolved, $3.20") and the figures at the end.
`--resume RUN_ID` picks up a run whose driver died.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connection

from pipeline import jobs
from pipeline import services as pipeline_services
from pipeline.models import Task
from pipeline.workflow import WorkflowError

from ... import selectors, services
from ...instances import parse_jsonl
from ...models import EvalResult, EvalRun
from ...testbed import DEFAULT_TEST_TIMEOUT, runner_argv

POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = "Run SWE-bench instances through workflows as normal tasks and grade them with their tests."

    def add_arguments(self, parser):
        parser.add_argument("instances", nargs="?", help="JSONL file of instances (SWE-bench fields)")
        parser.add_argument("--workflow", action="append", default=[], help="Workflow YAML (repeat to compare several)")
        parser.add_argument("--concurrency", type=int, default=1, help="Instances running at once, over all workflows (default 1)")
        parser.add_argument("--repo", default="", help="A local clone holding the instances' commits (default: each instance's repo path)")
        parser.add_argument("--test-runner", default="", help="Test runner; the test ids are appended as arguments (default: python -m pytest -rA …)")
        parser.add_argument("--test-timeout", type=float, default=DEFAULT_TEST_TIMEOUT, help="Seconds per test when grading (default 120)")
        parser.add_argument("--name", default="", help="A name for the run(s)")
        parser.add_argument("--queue", action="store_true", help="Run the stage jobs on the django-q2 workers instead of in this process")
        parser.add_argument("--resume", type=int, action="append", default=[], help="Carry on with this run (repeatable)")
        parser.add_argument("--keep-repos", action="store_true", help="Keep the copies of the repositories under var/eval/repos/ when the runs end (default: removed)")

    def handle(self, *args, **opts):
        if opts["concurrency"] < 1:
            raise CommandError(f"--concurrency: must be at least 1, got {opts['concurrency']}")
        if opts["test_timeout"] <= 0:
            raise CommandError(f"--test-timeout: must be more than 0, got {opts['test_timeout']}")
        self.repo = opts["repo"]
        self.enqueue = opts["queue"]
        runs = self.resumed(opts["resume"]) if opts["resume"] else self.created(opts)
        recovered = services.eval_results_recover(runs=runs)
        if recovered:
            self.stdout.write(f"picked up {recovered} result(s) a previous driver left")
        self.lock = threading.Lock()
        todo = list(
            EvalResult.objects.filter(run__in=runs).exclude(status=EvalResult.Status.DONE).order_by("position", "run_id").values_list("pk", flat=True)
        )
        with ThreadPoolExecutor(max_workers=opts["concurrency"], thread_name_prefix="eval") as pool:
            futures = [pool.submit(self.one, pk) for pk in todo]
            for future in as_completed(futures):
                future.result()
        for run in runs:
            services.eval_run_finish_if_done(run=run)
        if not opts["keep_repos"]:
            removed = services.eval_repos_cleanup(runs=[r for r in runs if r.results.exclude(status=EvalResult.Status.DONE).count() == 0])
            if removed:
                self.stdout.write(f"removed {len(removed)} evaluation copies of repositories: {', '.join(str(p) for p in removed[:4])}{' …' if len(removed) > 4 else ''}")
        self.report(runs)

    # -- setting up ----------------------------------------------------------------------

    def created(self, opts) -> list[EvalRun]:
        if not opts["instances"]:
            raise CommandError("give the instances file (or --resume RUN_ID)")
        if not opts["workflow"]:
            raise CommandError("give at least one --workflow FILE")
        try:
            runner = list(runner_argv(opts["test_runner"]))
        except ValueError as exc:
            raise CommandError(f"--test-runner: {exc}") from None
        source = Path(opts["instances"])
        try:
            raw = source.read_bytes()
        except OSError as exc:
            raise CommandError(f"{source}: {exc.strerror}") from None
        instances, errors = parse_jsonl(raw, source=str(source))
        for error in errors:
            self.stderr.write(f"skipped: {error}")
        if not instances:
            raise CommandError(f"{source}: no instance to run" + (f" ({len(errors)} bad line(s))" if errors else ""))
        texts = []
        for name in opts["workflow"]:
            path = Path(name)
            try:
                texts.append((str(path), path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"--workflow {path}: {exc}") from None
        batch = uuid.uuid4().hex
        runs = []
        for workflow_source, text in texts:
            try:
                run = services.eval_run_create(
                    workflow_text=text, workflow_source=workflow_source, instances=instances, input_errors=errors,
                    instances_source=str(source), test_runner=runner, test_timeout=opts["test_timeout"],
                    concurrency=opts["concurrency"], name=opts["name"], batch=batch,
                )
            except WorkflowError as exc:
                EvalRun.objects.filter(batch=batch).delete()
                raise CommandError(str(exc)) from None
            runs.append(run)
            self.stdout.write(f"run {run.pk}: {workflow_source} (fingerprint {run.workflow_fingerprint[:12]}), {len(instances)} instance(s)")
        return runs

    def resumed(self, ids: list[int]) -> list[EvalRun]:
        runs = list(EvalRun.objects.filter(pk__in=ids))
        missing = sorted(set(ids) - {r.pk for r in runs})
        if missing:
            raise CommandError(f"--resume: no evaluation run {missing[0]}")
        return runs

    # -- one instance, in a thread of its own -------------------------------------------------

    def one(self, pk: int) -> None:
        close_old_connections()
        try:
            result = EvalResult.objects.select_related("run").get(pk=pk)
            if result.status == EvalResult.Status.PENDING:
                if not services.eval_result_start(result=result, repo_override=self.repo, enqueue=self.enqueue):
                    return  # another driver has it
            result.refresh_from_db()
            while result.status == EvalResult.Status.RUNNING and result.task_id:
                task = Task.objects.get(pk=result.task_id)
                if task.is_active and not self.enqueue:
                    # A stage whose runner died (this command killed, --resume now) holds a
                    # lease nobody renews: once it expires the attempt is recorded as worker
                    # lost and the stage queued again, as the coordinator's reaper does for
                    # the workers' stages.
                    pipeline_services.stage_reap_expired(task=task, enqueue=False)
                    jobs.task_run_inline(task=task)
                if services.eval_result_finish(result=result):
                    break
                time.sleep(POLL_SECONDS)
                result.refresh_from_db()
            self.progress(result.run)
        except Exception as exc:  # one instance's crash must not stop the others
            self.stderr.write(f"result {pk}: {type(exc).__name__}: {exc} (left as it is; --resume picks it up)")
        finally:
            connection.close()

    def progress(self, run: EvalRun) -> None:
        summary = selectors.run_summary(run)
        with self.lock:
            self.stdout.write(f"run {run.pk}: {summary.progress()}")

    def report(self, runs: list[EvalRun]) -> None:
        self.stdout.write("")
        self.stdout.write(f"{'run':>5} {'resolved':>9} {'rate':>6} {'$/inst':>9} {'$/resolved':>11} {'median s':>9} {'p90 s':>7}  fingerprint   workflow")
        for run in runs:
            s = selectors.run_summary(run)
            rate = f"{s.resolve_rate:.0%}" if s.resolve_rate is not None else "-"
            per = f"{s.cost_per_instance:.4f}" if s.cost_per_instance is not None else "-"
            per_resolved = f"{s.cost_per_resolved:.4f}" if s.cost_per_resolved is not None else "-"
            med = f"{s.median_seconds:.1f}" if s.median_seconds is not None else "-"
            p90 = f"{s.p90_seconds:.1f}" if s.p90_seconds is not None else "-"
            self.stdout.write(
                f"{run.pk:>5} {s.resolved:>4}/{s.instances:<4} {rate:>6} {per:>9} {per_resolved:>11} {med:>9} {p90:>7}  {run.workflow_fingerprint[:12]}  {run.workflow_source}"
            )
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s.outcomes.items()))
            self.stdout.write(f"      outcomes: {outcomes}")
            for result in run.results.exclude(outcome__in=["", EvalResult.Outcome.RESOLVED]).order_by("position"):
                self.stdout.write(f"      {result.instance_id}: {result.outcome}: {result.reason[:200]}")
