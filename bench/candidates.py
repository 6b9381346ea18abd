"""Best of N (issue 25): wall time of one task with `candidates: 3` against `candidates: 1`, and
the overhead of the selection.

    .venv/bin/python bench/candidates.py [--runs 3]

Both sides run the bundled sample (demo/sample-repo, a bare origin) through the four stages with
the real `claude` CLI against the scripted model server (demo/script.yaml's planning and
reviewing; each building candidate a right fix of its own, 0.3 s per model turn like the demo's),
`test_command` on. With 3 candidates they run at once, one thread per candidate as three q2
workers would run them; the selection then runs the test results, the judge (the reviewing
stage's provider, one prompt) and the diff sizes. The runs alternate (1, 3, 1, 3, ...) so drift
hits both; figures are medians:

* wall time of the task, 1 vs 3 candidates, and their ratio;
* the selection attempt's own time (reading the candidates back, the judge's run, moving the
  task branch and pushing it) and its cost (the judge's tokens);
* the spend of the task, 1 vs 3.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tacx_site.settings")

CHECK = 'from greeter import farewell\n\nassert farewell("Ada") == "Goodbye, Ada"\nprint("1 passed")\n'
FIX = "cat >> greeter.py <<'PY'\n\n\ndef farewell(name: str) -> str:\n    return f\"Goodbye, {{name}}\"{extra}\nPY\n"


def script() -> dict:
    demo = yaml.safe_load((ROOT / "demo" / "script.yaml").read_text())
    by_name = {c["name"]: c for c in demo["conversations"]}
    conversations = []
    for k in (1, 2, 3):
        extra = "  # " + "x" * k if k > 1 else ""
        conversations.append(
            {
                "name": f"c{k}",
                "match": f"(candidate c{k})",
                "turns": [
                    {
                        "tool_calls": [{"bash": FIX.format(extra=extra)}],
                        "usage": {"input_tokens": 2200, "output_tokens": 200},
                        "delay": 0.3,
                    },
                    {
                        "tool_calls": [{"bash": f"git add -A && git commit -q -m 'c{k}: farewell'"}],
                        "usage": {"input_tokens": 2400, "output_tokens": 30},
                        "delay": 0.3,
                    },
                    {"text": "Done.", "usage": {"input_tokens": 2500, "output_tokens": 10}},
                ],
            }
        )
    conversations.append(
        {
            "name": "judge",
            "match": "(selection)",
            "turns": [
                {
                    "text": '{"choice": 1, "reasons": "the plainest"}',
                    "usage": {"input_tokens": 3000, "output_tokens": 30},
                    "delay": 0.3,
                }
            ],
        }
    )
    conversations += [copy.deepcopy(by_name["building"]), copy.deepcopy(by_name["planning"]), copy.deepcopy(by_name["reviewing"])]
    return {"conversations": conversations}


def setup_django(tmp: Path) -> None:
    os.environ["TACX_VAR_DIR"] = str(tmp / "var")
    os.environ["TACX_WORKTREE_ROOT"] = str(tmp / "trees")
    # The test command is this Python: the sandbox shows its installation (as the tests do).
    os.environ["TACX_SANDBOX_ALLOW_READ"] = os.pathsep.join([sys.prefix, sys.base_prefix])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def repository(tmp: Path, n: int):
    from harness.management.commands.demo import make_sample_repository
    from pipeline import git
    from pipeline.models import Repository

    repo = make_sample_repository(tmp / f"sample-{n}")
    (repo / "check.py").write_text(CHECK)
    (repo / ".tac").mkdir()
    workflow = {
        "stages": [{"name": "planning"}, {"name": "building", "candidates": n}, {"name": "reviewing"}, {"name": "pr_creation"}]
    }
    workflow["test_command"] = {"run": f"{sys.executable} check.py", "timeout": 60}
    (repo / ".tac" / "workflow.yaml").write_text(yaml.safe_dump(workflow))
    git.commit_all(repo, f"workflow: {n} candidate(s)")
    git.push(repo, "origin", "main")
    return Repository.objects.create(kind="local", full_name=f"bench-c{n}", local_path=str(repo), default_branch="main")


def run_parallel(task) -> None:
    """Every queued stage of `task` until none is left; queued candidates all at once (threads)."""
    from django.db import connection

    from pipeline import attempt
    from pipeline.models import Stage

    def one(stage_id: int) -> None:
        try:
            attempt.run_stage(stage_id, enqueue_next=False)
        finally:
            connection.close()

    while queued := list(task.stages.filter(status=Stage.Status.QUEUED).order_by("position", "id")):
        if len(queued) == 1:
            attempt.run_stage(queued[0].pk, enqueue_next=False)
            continue
        threads = [threading.Thread(target=one, args=(s.pk,)) for s in queued]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def once(repo, issue: int) -> dict:
    from pipeline import services
    from pipeline.models import StageResult, Task

    started = time.perf_counter()
    task, _ = services.task_create(repository=repo, issue_number=issue, title="Add a farewell", body="Please add farewell(name).")
    services.task_dispatch(task=task, enqueue=False)
    run_parallel(task)
    wall = time.perf_counter() - started
    task.refresh_from_db()
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    selection = StageResult.objects.filter(task=task, output_file="selection").first()
    return {
        "wall": wall,
        "cost": float(task.cost_usd),
        "selection": (selection.completed_at - selection.started_at).total_seconds() if selection else 0.0,
        "judge_cost": float(selection.cost_usd or 0) if selection else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI (tests/test_bench_smoke.py): one run")
    args = parser.parse_args()
    if args.smoke:
        args.runs = 1
    os.environ["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    with tempfile.TemporaryDirectory(prefix="tacx-bench-") as tmpdir:
        tmp = Path(tmpdir)
        setup_django(tmp)
        from harness.modelserver import ScriptedModelServer

        with ScriptedModelServer(script()) as server:
            os.environ.update({"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "bench-key"})
            repos = {n: repository(tmp, n) for n in (1, 3)}
            figures: dict[int, list[dict]] = {1: [], 3: []}
            for run in range(args.runs):
                for n in (1, 3):
                    figures[n].append(once(repos[n], 100 * n + run))
                    f = figures[n][-1]
                    print(
                        f"run {run + 1}, {n} candidate(s): {f['wall']:.2f} s, ${f['cost']:.4f}, selection {f['selection']:.2f} s",
                        flush=True,
                    )

    def med(n: int, key: str) -> float:
        return statistics.median(f[key] for f in figures[n])

    print("\n| candidates | median wall time | median cost | selection (median) | judge cost |\n|---|---|---|---|---|")
    for n in (1, 3):
        print(
            f"| {n} | {med(n, 'wall'):.2f} s | ${med(n, 'cost'):.4f} | {med(n, 'selection'):.2f} s | ${med(n, 'judge_cost'):.4f} |"
        )
    print(
        f"\nwall time 3 vs 1: x{med(3, 'wall') / med(1, 'wall'):.2f}; selection: {med(3, 'selection'):.2f} s = {100 * med(3, 'selection') / med(3, 'wall'):.0f}% of the 3-candidate task"
    )


if __name__ == "__main__":
    main()
