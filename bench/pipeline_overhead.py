"""Pipeline overhead: one four-stage task through TAC-X vs. the same work done by a plain script.

    .venv/bin/python bench/pipeline_overhead.py [--runs 5]

Both sides run the real `claude` CLI against the same scripted model server (demo/script.yaml)
on a fresh sample repository with a bare origin:

* baseline — a plain script: `git worktree add`, then for each agent stage the same argv and
  environment TAC-X would use, stdout read to the end, then the git commands TAC-X runs
  (commit leftovers, push the branch);
* TAC-X — `task_create` + `task_dispatch` + every stage through the runner (claims, leases,
  event parsing and batched storage, evidence checks, push, PR body), in this process.

The runs alternate (baseline, TAC-X, baseline, …) so drift hits both; the figure is
median(TAC-X) / median(baseline). Target ≤ 1.15.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tacx_site.settings")


def setup_django(tmp: Path) -> None:
    os.environ["TACX_VAR_DIR"] = str(tmp / "var")
    os.environ["TACX_WORKTREE_ROOT"] = str(tmp / "trees")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def baseline(repo: Path, tmp: Path, n: int) -> float:
    from pipeline import git
    from pipeline.providers import get_provider
    from pipeline.providers.base import Invocation, agent_environment
    from pipeline.workflow import default_workflow

    wf = default_workflow()
    started = time.perf_counter()
    tree = tmp / f"baseline-tree-{n}"
    branch = f"baseline/{n}"
    git.run(["worktree", "add", "-q", "-b", branch, str(tree), "main"], cwd=repo)
    for name in ("planning", "building", "reviewing"):
        cfg = wf.stage(name)
        prompt = f"TACX-STAGE: {name}\n\n" + cfg.prompt
        provider = get_provider(cfg.provider)
        inv = Invocation(prompt=prompt, cwd=str(tree), model=cfg.model, max_turns=cfg.max_turns,
                         allowed_tools=cfg.allowed_tools, permission_mode=cfg.permission_mode)
        env = {**agent_environment(provider, inv), **git.identity_env()}
        subprocess.run(provider.build_command(inv), cwd=tree, env=env, capture_output=True,
                       stdin=subprocess.DEVNULL, check=True)
        if name == "planning":
            (tree / "plan.md").unlink()
        if name == "reviewing":
            (tree / "review.md").unlink()
        git.commit_all(tree, f"leftovers of {name}")
        git.push(tree, "origin", branch)
    return time.perf_counter() - started


def tacx(repository, n: int) -> float:
    from pipeline import services
    from pipeline.models import Task

    started = time.perf_counter()
    task, _ = services.task_create(repository=repository, issue_number=1000 + n, title="Add a farewell", body="Please.")
    services.task_dispatch(task=task, enqueue=False)
    task = services.task_run_inline(task=task)
    elapsed = time.perf_counter() - started
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tacx-bench-") as tmpdir:
        tmp = Path(tmpdir)
        setup_django(tmp)
        from pipeline.management.commands.demo import make_sample_repository  # noqa: E402
        from pipeline.models import Repository
        from pipeline.modelserver import ScriptedModelServer

        repo = make_sample_repository(tmp / "sample")
        repository = Repository.objects.create(kind="local", full_name="bench", local_path=str(repo), default_branch="main")
        with ScriptedModelServer(ROOT / "demo" / "script.yaml") as server:
            os.environ["ANTHROPIC_BASE_URL"] = server.url
            os.environ["ANTHROPIC_API_KEY"] = "bench-key"
            base_times, tacx_times = [], []
            for n in range(args.runs):
                base_times.append(baseline(repo, tmp, n))
                tacx_times.append(tacx(repository, n))
                print(f"run {n + 1}: baseline {base_times[-1]:.2f} s, TAC-X {tacx_times[-1]:.2f} s", flush=True)
    b, t = statistics.median(base_times), statistics.median(tacx_times)
    print(f"median baseline {b:.2f} s, median TAC-X {t:.2f} s, ratio {t / b:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
