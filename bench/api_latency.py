"""Latency of the task list, API and page, on a big PostgreSQL database.

Creates a database of its own (``tacx_bench`` by default; dropped at the end unless --keep),
migrates it, fills it with 10,000 tasks (4 stages each, an attempt per started stage) and
1,000,000 agent events, then times ``GET /api/tasks/`` and ``GET /`` (the Tasks page) in process
through Django's full request stack (middleware, session auth, templates), several runs each.

    .venv/bin/python bench/api_latency.py                       # PostgreSQL on 127.0.0.1:5432
    .venv/bin/python bench/api_latency.py --server postgres://postgres@127.0.0.1:5432 --runs 5

Target (issue 4): p95 <= 100 ms for both; the Tasks page p95 <= 50 ms (issue 23).

Besides the wall-clock percentiles it reports, per URL, the median CPU time of this process per
request (`time.process_time`: the Python side of the request, far less disturbed than wall time
when other work shares the cores) and the number of SQL queries per request. The fill ends with
VACUUM ANALYZE, as autovacuum would have done on a database at rest: without it the pager's
COUNT(*) is a sequential scan of the freshly loaded table (22 ms) instead of an index-only scan
(1 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def admin_connection(server: str):
    import psycopg2

    conn = psycopg2.connect(f"{server}/postgres")
    conn.autocommit = True
    return conn


def create_database(server: str, name: str) -> None:
    conn = admin_connection(server)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def drop_database(server: str, name: str) -> None:
    conn = admin_connection(server)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def fill(tasks: int, events: int) -> None:
    """Bulk-insert the data set: tasks and stages with the ORM, events with one INSERT ... SELECT."""
    from django.db import connection
    from django.utils import timezone

    from pipeline.models import Repository, Stage, StageResult, Task

    now = timezone.now()
    repos = [Repository.objects.create(kind="local", full_name=f"bench/repo-{i}", local_path=f"/nonexistent/{i}") for i in range(5)]
    statuses = ["succeeded"] * 6 + ["failed", "cancelled", "queued", "running"]
    rows = []
    for i in range(tasks):
        status = statuses[i % len(statuses)]
        started = now - timezone.timedelta(minutes=tasks - i)
        rows.append(
            Task(
                repository=repos[i % len(repos)],
                # Issue numbers unique per repository, so at most one active task per issue.
                issue_number=i + 1,
                title=f"Benchmark issue {i + 1}: make the widget faster",
                body="x" * 500,
                status=status,
                trigger_source="poll",
                branch=f"tacx/{i + 1}-bench",
                input_tokens=1000 + i,
                output_tokens=200,
                cost_usd="0.0123",
                workflow={"stages": [{"name": "planning"}], "review_rounds": 2},
                created_at=started,
                triggered_at=started,
                started_at=None if status == "queued" else started,
                finished_at=started + timezone.timedelta(minutes=3) if status in ("succeeded", "failed", "cancelled") else None,
            )
        )
    Task.objects.bulk_create(rows, batch_size=2000)
    names = ["planning", "building", "reviewing", "pr_creation"]
    stage_status = {
        "succeeded": ["succeeded"] * 4,
        "failed": ["succeeded", "failed", "cancelled", "cancelled"],
        "cancelled": ["succeeded", "cancelled", "cancelled", "cancelled"],
        "queued": [],
        "running": ["succeeded", "running", "pending", "pending"],
    }
    stages = []
    for task in Task.objects.only("id", "status"):
        for pos, status in enumerate(stage_status[task.status]):
            stages.append(
                Stage(
                    task_id=task.pk,
                    name=names[pos],
                    position=pos,
                    provider="claude",
                    model="claude-sonnet-4-5",
                    status=status,
                    attempts=0 if status == "pending" else 1,
                )
            )
    Stage.objects.bulk_create(stages, batch_size=5000)
    results = []
    for stage in Stage.objects.exclude(status__in=["pending", "cancelled"]).only("id", "task_id", "status"):
        outcome = {"succeeded": "succeeded", "failed": "failed", "running": "running"}[stage.status]
        results.append(
            StageResult(
                stage_id=stage.pk,
                task_id=stage.task_id,
                attempt=1,
                outcome=outcome,
                success=outcome == "succeeded",
                provider="claude",
                model="claude-sonnet-4-5",
                input_tokens=500,
                output_tokens=100,
                cost_usd="0.005",
                completed_at=None if outcome == "running" else now,
            )
        )
    StageResult.objects.bulk_create(results, batch_size=5000)
    per_task = max(1, events // tasks)
    with connection.cursor() as cur:
        # Interleaved across tasks, as concurrent runners write them.
        cur.execute(
            """
            INSERT INTO pipeline_agentevent (task_id, result_id, seq, kind, data, created_at)
            SELECT t.id, NULL, g,
                   (ARRAY['message','tool_call','tool_result','usage'])[1 + g %% 4],
                   jsonb_build_object('role', 'assistant', 'text', 'event number ' || g || ' of a long transcript'),
                   now() - interval '1 day' + g * interval '1 second'
            FROM generate_series(1, %s) g CROSS JOIN pipeline_task t
            ORDER BY g, t.id
            """,
            [per_task],
        )
        cur.execute("VACUUM ANALYZE")  # the visibility map too (index-only scans), as autovacuum would


def measure(client, url: str, n: int) -> tuple[list[float], list[float], int]:
    """(wall ms per request, CPU ms per request, queries per request)."""
    from django.db import connection

    for _ in range(10):  # warm caches, connections, templates
        assert client.get(url).status_code == 200
    # An execute wrapper, not connection.queries: the request may close and reopen the connection.
    queries: list[str] = []
    with connection.execute_wrapper(lambda execute, sql, params, many, context: queries.append(sql) or execute(sql, params, many, context)):
        client.get(url)
    samples, cpu = [], []
    for _ in range(n):
        start, start_cpu = time.perf_counter(), time.process_time()
        response = client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return samples, cpu, len(queries)


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="tacx_bench")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="use an existing filled database")
    parser.add_argument(
        "--list-index",
        action="store_true",
        help="add the index proposed for Task.Meta (created_at DESC, id DESC) before measuring",
    )
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI (tests/test_bench_smoke.py): smallest sizes, one run")
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.events, args.requests, args.runs = 200, 2000, 5, 1
        args.database = f"tacx_bench_smoke_{os.getpid()}"

    if not args.reuse:
        create_database(args.server, args.database)
    os.environ["DATABASE_URL"] = f"{args.server}/{args.database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tacx_site.settings")
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()  # lets the test client run without ALLOWED_HOSTS changes
    try:
        if not args.reuse:
            started = time.monotonic()
            call_command("migrate", verbosity=0)
            fill(args.tasks, args.events)
            print(f"filled {args.tasks} tasks and {args.events} events in {time.monotonic() - started:.1f} s")
        if args.list_index:
            from django.db import connection

            with connection.cursor() as cur:
                cur.execute("CREATE INDEX IF NOT EXISTS task_created_desc ON pipeline_task (created_at DESC, id DESC)")
                cur.execute("ANALYZE pipeline_task")
        from django.contrib.auth import get_user_model

        from pipeline.models import AgentEvent, Task

        print(f"database: {Task.objects.count()} tasks, {AgentEvent.objects.count()} events")
        from django.contrib.auth.models import Permission

        user, _ = get_user_model().objects.get_or_create(username="bench")
        user.user_permissions.add(Permission.objects.get(content_type__app_label="pipeline", codename="view_task"))  # a viewer
        client = Client()
        client.force_login(user)
        urls = ["/api/tasks/", "/", "/api/tasks/?status=running", "/?status=failed&search=widget"]
        results: dict[str, list[float]] = {u: [] for u in urls}
        medians: dict[str, list[float]] = {u: [] for u in urls}
        cpus: dict[str, list[float]] = {u: [] for u in urls}
        queries: dict[str, int] = {}
        for run in range(args.runs):
            for url in urls:
                samples, cpu, queries[url] = measure(client, url, args.requests)
                results[url].append(p95(samples))
                medians[url].append(statistics.median(samples))
                cpus[url].append(statistics.median(cpu))
            print(f"run {run + 1} (load {os.getloadavg()[0]:.2f}): " + ", ".join(f"{u} p95 {results[u][-1]:.1f} ms" for u in urls), flush=True)
        print()
        print(f"{'url':45} {'median p50':>11} {'median p95':>11} {'CPU/request':>12} {'queries':>8}   (over {args.runs} runs of {args.requests} requests)")
        for url in urls:
            print(
                f"{url:45} {statistics.median(medians[url]):8.1f} ms {statistics.median(results[url]):8.1f} ms"
                f" {statistics.median(cpus[url]):9.1f} ms {queries[url]:8d}"
            )
        print(f"Tasks page p95 / API p95: {statistics.median(results['/']) / statistics.median(results['/api/tasks/']):.2f}")
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            drop_database(args.server, args.database)


if __name__ == "__main__":
    main()
