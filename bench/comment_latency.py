"""Comment latency: from an `@tacx` comment's webhook POST to the round's agent starting.

    .venv/bin/python bench/comment_latency.py [--comments 20] [--agent command|claude] [--database-url URL]

A real deployment on loopback, as in `trigger_latency.py`: the web server (`manage.py
runserver`, serving the webhook), a django-q2 cluster (ORM broker) and the coordinator, on one
database (a fresh SQLite file, or the scratch database you pass), against the GitHub stand-in of
the tests. One task has already opened its pull request; then, one after the other, a writer
comments `@tacx ...` on the pull request and the signed `issue_comment.created` delivery is
POSTed at t0. Each comment is a round (building again on the same branch, then the PR update);
the next comment is posted once the round has finished and been answered.

* `--agent command` (default): the building agent is a Python script whose first act is to note
  the time, so the figure is TAC-X's own latency (no CLI start-up).
* `--agent claude`: the real Claude Code CLI against the scripted model server; the figure is
  t0 → the round's first model request as the server records it (includes the CLI's start-up).

Target: p95 <= 1 s. Polling of conversations is off (interval 1 h): this is the webhook path.
One warm-up comment is not counted (it fills the permission cache and the worktree).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import ROOT, START_MARK, TOKEN, LoopbackStack, latency_figures, marked_start, percentile, wait_for

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tacx_site.settings")

FULL_NAME = "bench/sample"

AGENT = START_MARK + 'with pathlib.Path("CHANGES.md").open("a") as f:\n    f.write(f"change {started}\\n")\n'
PLANNER = "import pathlib; pathlib.Path('plan.md').write_text('# Plan\\n')"
MODEL_SCRIPT = {
    "conversations": [
        {
            "name": "building",
            "match": "TACX-STAGE: building",
            "turns": [
                {"text": "Changing.", "tool_calls": [{"bash": "date >> CHANGES.md"}], "usage": {"input_tokens": 100, "output_tokens": 10}},
                {"text": "Done.", "usage": {"input_tokens": 120, "output_tokens": 5}},
            ],
        }
    ]
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comments", type=int, default=20)
    parser.add_argument("--agent", choices=("command", "claude"), default="command")
    parser.add_argument("--database-url", default="", help="a scratch database (default: a new SQLite file)")
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI (tests/test_bench_smoke.py): smallest sizes, one run")
    args = parser.parse_args()
    if args.smoke:
        args.comments = 1

    tmp = Path(tempfile.mkdtemp(prefix="tacx-bench-comment-"))
    database_url = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"

    from github_standin import GitHubStandIn

    from harness.cli_runs import DUMMY_API_KEY
    from harness.modelserver import ScriptedModelServer

    standin = GitHubStandIn(token=TOKEN).start()
    standin.add_repo(FULL_NAME, permissions={"alice": "write"})
    model = ScriptedModelServer(MODEL_SCRIPT).start() if args.agent == "claude" else None
    stack = LoopbackStack(tmp, database_url, github_url=standin.url, TACX_CONVERSATION_POLL_INTERVAL="3600", HOME=str(tmp / "home"))
    (tmp / "home").mkdir()
    if model is not None:
        stack.env.update({"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": DUMMY_API_KEY})
    stack.django()
    from conftest import make_origin_and_clone
    from django.core.management import call_command

    from pipeline.models import AgentEvent, Repository, Round, StageResult, Task

    call_command("migrate", verbosity=0)
    # The agents run in TAC-X's sandbox, which shows them TAC-X's own interpreter.
    python = sys.executable
    if args.agent == "claude":
        building = ["    provider: claude", "    model: claude-sonnet-4-5", "    timeout: 120", "    max_turns: 5", "    permission_mode: acceptEdits", "    allowed_tools: [Bash, Write, Edit, Read]"]
    else:
        building = ["    provider: command", "    timeout: 60", "    options:", f"      argv: {json.dumps([python, '-c', AGENT])}"]
    workflow = "\n".join(
        ["version: 1", "max_followup_rounds: 1000", "stages:", "  - name: planning", "    provider: command", "    timeout: 60", "    options:", f"      argv: {json.dumps([python, '-c', PLANNER])}"]
        + ["  - name: building", *building, "  - name: pr_creation", ""]
    )
    origin, _ = make_origin_and_clone(tmp, "sample", {"README.md": "bench\n", ".tac/workflow.yaml": workflow})
    standin.repos[FULL_NAME.lower()].origin = str(origin)
    Repository.objects.create(kind=Repository.Kind.GITHUB, full_name=FULL_NAME, clone_url=str(origin), max_concurrent_tasks=100)


    def post_comment(text: str, n: int) -> float:
        comment = standin.add_comment(FULL_NAME, task_pr, text, author="alice")
        body = standin.webhook("issue_comment.created", FULL_NAME, sender="alice", number=task_pr, comment_id=comment["id"])
        return stack.post_webhook(event="issue_comment", delivery=f"bench-comment-{n}", body=body)

    def agent_started(n: int, t0: float) -> float | None:
        if model is None:
            round_ = Round.objects.filter(text__endswith=f"bench change {n}").first()
            return marked_start(AgentEvent.objects.filter(result__followup=round_, result__stage__name="building")) if round_ is not None else None
        times = [r["time"] for r in model.requests if r["time"] >= t0 and r["conversation"] == "building" and not r["auxiliary"]]
        return min(times) if times else None

    def round_answered(n: int):
        round_ = Round.objects.filter(text__endswith=f"bench change {n}").first()
        return round_ is not None and round_.replied_at is not None and round_

    latencies: list[float] = []
    claims: list[float] = []  # t0 -> the round's building stage claimed by a q2 worker
    try:
        stack.start(poll_interval="1")
        standin.add_issue(FULL_NAME, number=1, title="Bench issue", body="Make it faster.", labels=("rpi-auto",), labeled_by="alice")
        task = wait_for(lambda: Task.objects.filter(status=Task.Status.SUCCEEDED, pr_number__isnull=False).first(), 180, "the task's pull request")
        task_pr = task.pr_number
        print(f"task {task.pk} opened pull request #{task_pr}; {args.comments} comments ({args.agent} agent):", flush=True)
        for n in range(args.comments + 1):
            t0 = post_comment(f"@tacx bench change {n}", n)
            started = wait_for(lambda n=n, t0=t0: agent_started(n, t0), 120, f"the agent of comment {n}")
            round_ = wait_for(lambda n=n: round_answered(n), 180, f"the reply to comment {n}")
            if round_.status != Round.Status.SUCCEEDED:
                raise SystemExit(f"round {round_.pk} {round_.status}: {round_.reason}")
            claimed = StageResult.objects.filter(followup=round_, stage__name="building").order_by("id").first().started_at.timestamp()
            if n:
                latencies.append(started - t0)
                claims.append(claimed - t0)
            print(f"  comment {n}: {started - t0:.3f} s (stage claimed after {claimed - t0:.3f} s)" + ("" if n else " (warm-up, not counted)"), flush=True)
    finally:
        stack.stop()
        standin.stop()
        if model is not None:
            model.stop()

    engine = "PostgreSQL" if database_url.startswith("postgres") else "SQLite"
    what = "agent start" if args.agent == "command" else "first model request (claude CLI)"
    print(f"\nComment -> {what} ({engine}, q2 poll 0.2 s, coordinator tick 0.2 s), seconds:")
    print(f"  {latency_figures(latencies, 1.0)}")
    print(f"  of which comment -> building stage claimed: p50 {statistics.median(claims):.3f}  p95 {percentile(claims, 0.95):.3f}")



if __name__ == "__main__":
    main()
