"""Pipeline overhead: one four-stage task through TAC-X vs. the same work done by a plain script.

    .venv/bin/python bench/pipeline_overhead.py [--runs 5] [--providers claude,gemini,qwen,opencode]

Both sides run the same real agent CLI (one column per provider: every agent stage of the
workflow uses it) against the same scripted model server (demo/script.yaml) on a fresh sample
repository with a bare origin:

* baseline — a plain script: `git worktree add`, then for each agent stage the same argv and
  environment TAC-X would use (and the same private HOME with the CLI's settings written by
  the provider's ``prepare_home``), stdout read to the end, then the git commands TAC-X runs
  (commit leftovers, push the branch);
* TAC-X — `task_create` + `task_dispatch` + every stage through the runner (claims, leases,
  event parsing and batched storage, evidence checks, push, PR body), in this process.

The runs alternate (baseline, TAC-X, baseline, …) so drift hits both; the figure per provider
is median(TAC-X) / median(baseline). Target ≤ 1.15.
"""

from __future__ import annotations

import argparse
import os
import shutil
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


MODELS = {"claude": "claude-sonnet-4-5", "codex": "gpt-5", "gemini": "gemini-2.5-pro", "qwen": "qwen3-coder-plus", "opencode": "glm-4.6"}


def workflow_text(provider: str) -> str:
    """Every agent stage on ``provider`` (claude: the bundled default workflow)."""
    if provider == "claude":
        return ""
    stage = f"    provider: {provider}\n    model: {MODELS[provider]}\n"
    return "stages:\n" + "".join(f"  - name: {n}\n{stage}" for n in ("planning", "building", "reviewing")) + "  - name: pr_creation\n"


def baseline(repo: Path, tmp: Path, n: int) -> float:
    from pipeline import git
    from pipeline.providers import get_provider
    from pipeline.providers.base import Invocation, agent_environment
    from pipeline.workflow import load_workflow

    wf = load_workflow(repo)
    started = time.perf_counter()
    tree = tmp / f"baseline-tree-{n}"
    branch = f"baseline/{n}"
    git.run(["worktree", "add", "-q", "-b", branch, str(tree), "main"], cwd=repo)
    for name in ("planning", "building", "reviewing"):
        cfg = wf.stage(name)
        prompt = f"TACX-STAGE: {name}\n\n" + cfg.prompt
        provider = get_provider(cfg.provider)
        inv = Invocation(prompt=prompt, cwd=str(tree), model=cfg.model, max_turns=cfg.max_turns,
                         allowed_tools=tuple(cfg.allowed_tools), permission_mode=cfg.permission_mode, options=dict(cfg.options))
        home = tempfile.mkdtemp(prefix="bench-home-")  # as the runner does: private HOME and TMPDIR
        os.mkdir(os.path.join(home, "tmp"))
        env = {**agent_environment(provider, inv), **git.identity_env(), "HOME": home, "TMPDIR": os.path.join(home, "tmp")}
        provider.prepare_home(home, inv, env)
        subprocess.run(provider.build_command(inv), cwd=tree, env=env, capture_output=True,
                       stdin=subprocess.DEVNULL, check=True)
        shutil.rmtree(home, ignore_errors=True)
        if name == "planning":
            (tree / "plan.md").unlink()
        if name == "reviewing":
            (tree / "review.md").unlink()
        git.commit_all(tree, f"leftovers of {name}")
        git.push(tree, "origin", branch)
    return time.perf_counter() - started


def tacx(repository, n: int) -> float:
    from pipeline import jobs, services
    from pipeline.models import Task

    started = time.perf_counter()
    task, _ = services.task_create(repository=repository, issue_number=1000 + n, title="Add a farewell", body="Please.")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)
    elapsed = time.perf_counter() - started
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    return elapsed


def measure(provider: str, tmp: Path, runs: int) -> tuple[float, float]:
    """(median baseline, median TAC-X) in seconds for one provider."""
    from harness.management.commands.demo import make_sample_repository  # noqa: E402
    from pipeline import git
    from pipeline.models import Repository

    repo = make_sample_repository(tmp / f"sample-{provider}")
    if text := workflow_text(provider):
        (repo / ".tac").mkdir()
        (repo / ".tac" / "workflow.yaml").write_text(text)
        git.commit_all(repo, f"workflow: every stage on {provider}")
        git.push(repo, "origin", "main")
    repository = Repository.objects.create(kind="local", full_name=f"bench-{provider}", local_path=str(repo), default_branch="main")
    base_times, tacx_times = [], []
    for n in range(runs):
        base_times.append(baseline(repo, tmp / provider, n))
        tacx_times.append(tacx(repository, n))
        print(f"{provider} run {n + 1}: baseline {base_times[-1]:.2f} s, TAC-X {tacx_times[-1]:.2f} s", flush=True)
    return statistics.median(base_times), statistics.median(tacx_times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--providers", default="claude", help="comma-separated: claude,gemini,qwen,opencode")
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI (tests/test_bench_smoke.py): smallest sizes, one run")
    args = parser.parse_args()
    if args.smoke:
        args.runs = 1
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    os.environ["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    results = {}
    with tempfile.TemporaryDirectory(prefix="tacx-bench-") as tmpdir:
        tmp = Path(tmpdir)
        setup_django(tmp)
        from harness.modelserver import ScriptedModelServer

        with ScriptedModelServer(ROOT / "demo" / "script.yaml") as server:
            key = "bench-key"
            os.environ.update({
                "ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": key,
                "GOOGLE_GEMINI_BASE_URL": server.url, "GEMINI_API_KEY": key,
                "OPENAI_BASE_URL": f"{server.url}/v1", "OPENAI_API_KEY": key,
                "OPENCODE_BASE_URL": f"{server.url}/v1", "OPENCODE_API_KEY": key,
            })  # fmt: skip
            for provider in providers:
                (tmp / provider).mkdir()
                results[provider] = measure(provider, tmp, args.runs)
    print("\n| provider | median baseline | median TAC-X | ratio (target <= 1.15) |\n|---|---|---|---|")
    for provider, (b, t) in results.items():
        print(f"| {provider} | {b:.2f} s | {t:.2f} s | {t / b:.3f} |")


if __name__ == "__main__":
    main()
