"""Best of N, the attempt side (issue 25): a candidate's settings, and the selection attempt of
the stage they ran for.

The selection (`select`), in the order of the stage's `select:` rules:
1. every candidate of the pass is read back: its outcome, its last attempt's test result (the
   repository's `test_command`, run in the candidate's own sandbox by its attempt as for any
   building), its diff against the head it started from (numstat in the mirror), its cost;
2. `tests`: only candidates that succeeded and whose tests passed go on; none -> the stage
   fails with each candidate's reason;
3. `judge`: with two or more left, the reviewing stage's provider gets one prompt (the issue
   and each diff, fenced as untrusted) and must answer one JSON object
   `{"choice": <number or null>, "reasons": "..."}`. Anything else is a recorded error and the
   next rule decides;
4. `smallest_diff` (and always last): fewest changed lines, then the lowest number.
Each step's outcome is written to the parent's `candidate_info` before the next acts on it
(services.selection_record keeps the first value written), so a re-run after a kill -9 reuses
the judge's recorded answer and the recorded winner. The winner's head becomes the task branch
(a fast-forward of the head the candidates started from) and is pushed."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from decimal import Decimal

from .. import git, services
from ..lib.candidates import CandidateSpec
from ..lib.untrusted import BoundaryCollision, Fences
from ..models import Stage, StageResult, Task
from ..workflow import StageConfig, Workflow
from . import agent, publish
from .context import AttemptContext, StageFailure

MAX_DIFF_CHARS = 40_000  # of one candidate's diff in the judge's prompt
MAX_REASONS = 2000
_PASSED = re.compile(r"(\d+) passed")
_FAILED = re.compile(r"(\d+) (?:failed|error)")


def candidate_config(cfg: StageConfig, spec: dict) -> StageConfig:
    """The stage's settings for one candidate: its provider and model; another provider than
    the stage's keeps none of the stage's CLI-specific settings (tools, permission mode,
    arguments, options: another CLI's words); its prompt variant is added to the prompt."""
    s = CandidateSpec(**spec)
    prompt = cfg.prompt + (
        f"\n\nThis candidate's approach: {s.prompt_variant.replace('{', '{{').replace('}', '}}')}\n" if s.prompt_variant else ""
    )
    if s.provider != cfg.provider:
        cfg = replace(cfg, allowed_tools=(), permission_mode="", extra_args=(), options={}, max_turns=cfg.max_turns)
    options = s.options if s.options is not None else cfg.options
    return replace(cfg, provider=s.provider, model=s.model, prompt=prompt, options=dict(options), candidates=())


def tests_figure(result: StageResult | None) -> str:
    """ "12/12" from a pytest-like summary line in the test output, else the status."""
    if result is None or not result.tests_status:
        return "no test command"
    passed = sum(int(n) for n in _PASSED.findall(result.tests_output or "")[-1:])
    failed = sum(int(n) for n in _FAILED.findall(result.tests_output or "")[-1:])
    if passed or failed:
        return f"{passed}/{passed + failed}"
    return result.tests_status


def read_candidates(self: AttemptContext, key: str) -> list[dict]:
    """What the selection knows of each candidate of pass `key` (plain data, as recorded)."""
    rows = []
    for child in services.candidates_of(self.stage, key):
        results = list(child.results.order_by("id"))
        last = results[-1] if results else None
        cost = sum((r.cost_usd or Decimal(0) for r in results), Decimal(0))
        ok = child.status == Stage.Status.SUCCEEDED and last is not None and last.success
        row = {
            "k": child.candidate,
            "stage_id": child.pk,
            "label": CandidateSpec(**child.candidate_info["spec"]).label(),
            "status": child.status,
            "error": "" if ok else (child.error or (last.error if last else "") or child.status),
            "cost_usd": str(cost),
            "attempts": len(results),
            "head": last.head_commit if ok else "",
            "base": last.base_commit if last else "",
            "tests_status": last.tests_status if last else "",
            "tests": tests_figure(last),
            "result_id": last.pk if last else None,
            "branch": child.candidate_info.get("branch", ""),
        }
        row.update(diff_figures(self, row["base"], row["head"]))
        rows.append(row)
    return rows


def diff_figures(self: AttemptContext, base: str, head: str) -> dict:
    if not base or not head:
        return {"files": 0, "insertions": 0, "deletions": 0, "lines": 0}
    files = insertions = deletions = 0
    for line in git.run(["diff", "--numstat", base, head], cwd=self.repo_dir).splitlines():
        added, removed, _ = (line.split("\t", 2) + ["", ""])[:3]
        files += 1
        insertions += int(added) if added.isdigit() else 0
        deletions += int(removed) if removed.isdigit() else 0
    return {"files": files, "insertions": insertions, "deletions": deletions, "lines": insertions + deletions}


def passes_tests(row: dict, *, tests_rule: bool) -> bool:
    if row["status"] != Stage.Status.SUCCEEDED or not row["head"]:
        return False
    return not tests_rule or row["tests_status"] in ("", "passed")


def select(self: AttemptContext) -> None:
    """The selection attempt (see the module docstring)."""
    parent, task = self.stage, self.task
    cfg = self.workflow.stage(parent.name)
    key = services.pass_key(self.followup)
    record = services.selection_record(parent=parent, key=key, policy=list(cfg.select), candidates=read_candidates(self, key))
    rows = record["candidates"]
    passing = [r for r in rows if passes_tests(r, tests_rule="tests" in cfg.select)]
    if not passing:
        reasons = "; ".join(f"c{r['k']} ({r['label']}): {r['error'] or 'tests ' + r['tests']}" for r in rows)
        services.event_status(task, f"stage {parent.name}: no candidate passed: {reasons}", stage=parent.name)
        raise StageFailure(f"none of the {len(rows)} candidates passed: {reasons}", permanent=True)
    record = services.selection_record(parent=parent, key=key, passing=[r["k"] for r in passing])
    if "chosen" not in record:
        judge = {}
        if "judge" in cfg.select and len(passing) > 1:
            judge = (
                record.get("judge") or services.selection_record(parent=parent, key=key, judge=run_judge(self, passing))["judge"]
            )
        chosen, rule, reasons = choose(passing, judge)
        record = services.selection_record(parent=parent, key=key, chosen=chosen, rule=rule, reasons=reasons)
        services.event_status(
            task,
            f"stage {parent.name}: candidate c{record['chosen']} chosen ({record['rule']}): {record['reasons']}",
            stage=parent.name,
        )
    winner = next(r for r in rows if r["k"] == record["chosen"])
    # The winner's commits become the task branch: a fast-forward of the head they started from
    # (forced only when a person chose another candidate after one was applied).
    self.branch = task.branch
    before = git.head(self.worktree)
    git.worktree_at(self.repo_dir, self.worktree, task.branch, winner["head"])
    publish.publish_branch(self, force=not git.is_ancestor(self.repo_dir, before, winner["head"]))
    services.selection_update(parent=parent, key=key, applied=winner["k"])
    self.result.head_commit = winner["head"]
    won = StageResult.objects.filter(pk=winner["result_id"]).first()
    if won is not None:
        r = self.result
        r.tests_status, r.tests_exit_code, r.tests_duration, r.tests_output = (
            won.tests_status,
            won.tests_exit_code,
            won.tests_duration,
            won.tests_output,
        )
    self.result.output_file = "selection"
    self.result.output_text = summary(record)


def choose(passing: list[dict], judge: dict) -> tuple[int, str, str]:
    """The winner's number, the rule that chose it and why."""
    if len(passing) == 1:
        return passing[0]["k"], "only one passed", f"c{passing[0]['k']} is the only candidate whose tests passed"
    smallest = min(passing, key=lambda r: (r["lines"], r["k"]))
    if judge.get("choice") in {r["k"] for r in passing}:
        return judge["choice"], "judge", judge["reasons"]
    why = (
        "the judge could not tell them apart"
        if judge.get("ok")
        else (f"judge: {judge['error']}" if judge.get("error") else "no judge")
    )
    return smallest["k"], "smallest_diff", f"{why}; c{smallest['k']} has the smallest diff ({smallest['lines']} lines)"


def run_judge(self: AttemptContext, passing: list[dict]) -> dict:
    """One agent run of the reviewing stage's provider on the judge's prompt; its answer parsed
    strictly. Returns {"ok", "choice", "reasons"} or {"ok": False, "error", "answer"}."""
    names = [s.name for s in self.workflow.stages]
    judge_cfg = self.workflow.stage("reviewing") if "reviewing" in names else self.cfg
    self.cfg = replace(judge_cfg, name=self.stage.name, allowed_tools=(), prompt="", candidates=())
    self.result.provider, self.result.model = self.cfg.provider, self.cfg.model
    diffs = {r["k"]: git.run(["diff", r["base"], r["head"]], cwd=self.repo_dir)[:MAX_DIFF_CHARS] for r in passing}
    while True:
        try:
            self.prompt_text = judge_prompt(self, passing, diffs, Fences())
            break
        except BoundaryCollision:
            continue
    try:
        agent.run_agent_stage(self)
    except StageFailure as exc:
        if exc.outcome == StageResult.Outcome.BUDGET_EXCEEDED:
            raise
        return {"ok": False, "error": f"the judge's run failed: {exc}", "answer": ""}
    return parse_verdict(self.result.output_text, {r["k"] for r in passing})


def judge_prompt(self: AttemptContext, passing: list[dict], diffs: dict[int, str], fences: Fences) -> str:
    task = self.task
    parts = [
        f"TACX-STAGE: {self.stage.name} (selection)",
        fences.explanation(),
        "",
        f"You are the judge of {len(passing)} candidate changes for issue #{task.issue_number} of {task.repository.full_name}. "
        "Each was made independently from the same commit, and the repository's tests pass on each. Choose the one that "
        "resolves the issue best: correct, complete, no more than needed, in the style of the code. Do not change any file.",
        "",
        "Issue title: " + fences.wrap(services.sanitize_issue_title(task.title), "issue_title", inline=True),
        "Issue body:",
        fences.wrap(task.body, "issue_body"),
    ]
    for r in passing:
        parts += [
            "",
            f"Candidate {r['k']} ({r['lines']} lines changed in {r['files']} files):",
            fences.wrap(diffs[r["k"]] or "(empty diff)", "diff", candidate=str(r["k"])),
        ]
    parts += [
        "",
        "Answer with one JSON object as the last line of your reply and nothing after it:",
        '{"choice": <the number of the candidate you choose>, "reasons": "<why, in one or two sentences>"}',
        'Write "choice": null if you cannot tell them apart.',
    ]
    return "\n".join(parts) + "\n"


def parse_verdict(text: str, allowed: set[int]) -> dict:
    """The judge's answer: the last non-empty line (or a ```json block at the very end) must be
    a JSON object with exactly `choice` (one of `allowed`, or null) and `reasons` (text)."""
    answer = (text or "").strip()
    fenced = re.search(r"```(?:json)?\s*\n(.*?)\n```\s*$", answer, re.S)
    line = fenced.group(1).strip() if fenced else (answer.splitlines()[-1].strip() if answer else "")
    shown = line[:200]

    def bad(problem: str) -> dict:
        return {
            "ok": False,
            "error": f"unusable answer ({problem}): {shown!r}" if shown else f"unusable answer ({problem})",
            "answer": answer[:2000],
        }

    if not line:
        return bad("empty")
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return bad("its last line is not JSON")
    if not isinstance(data, dict) or set(data) != {"choice", "reasons"}:
        return bad('not an object with exactly "choice" and "reasons"')
    choice, reasons = data["choice"], data["reasons"]
    if choice is not None and (isinstance(choice, bool) or not isinstance(choice, int) or choice not in allowed):
        return bad(f"choice must be one of {sorted(allowed)} or null")
    if not isinstance(reasons, str) or not reasons.strip():
        return bad("reasons must be a non-empty string")
    return {"ok": True, "choice": choice, "reasons": reasons.strip()[:MAX_REASONS]}


def summary(record: dict) -> str:
    """ "3 candidates, $0.41; chosen: c2 codex (tests 12/12, judge: ...)" and one line each."""
    rows = record.get("candidates") or []
    total = sum((Decimal(r["cost_usd"]) for r in rows), Decimal(0))
    winner = next((r for r in rows if r["k"] == record.get("chosen")), None)
    head = f"{len(rows)} candidates, ${total:.2f}"
    if winner is not None:
        head += (
            f"; chosen: c{winner['k']} {winner['label']} (tests {winner['tests']}, {record.get('rule')}: {record.get('reasons')})"
        )
    lines = [head]
    judge = record.get("judge") or {}
    if judge.get("error"):
        lines.append(f"judge error: {judge['error']}")
    for r in rows:
        state = "passed" if r["k"] in (record.get("passing") or []) else (r["error"] or f"tests {r['tests']}")
        lines.append(
            f"- c{r['k']} {r['label']}: {r['status']}, tests {r['tests']}, {r['lines']} lines in {r['files']} files, ${Decimal(r['cost_usd']):.4f}; {state}"
        )
    return "\n".join(lines)


def fan_out_if_due(stage_id: int, *, enqueue: bool) -> bool:
    """Before a stage job claims its stage: when the queued stage starts candidates now, start
    them (services.candidate_fan_out) and return True; the job is done."""
    stage = (
        Stage.objects.select_related("task__repository")
        .filter(pk=stage_id, status=Stage.Status.QUEUED, parent__isnull=True)
        .first()
    )
    if stage is None or stage.task.status != Task.Status.RUNNING or not stage.task.workflow:
        return False
    task = stage.task
    workflow = Workflow.from_json(task.workflow)
    followup = services.running_round(task)
    if services.candidate_step(stage=stage, workflow=workflow, followup=followup) != "fan_out":
        return False
    if not task.branch:
        # The candidates' branches are named after the task's (pipeline.lib.candidates).
        Task.objects.filter(pk=task.pk, branch="").update(branch=git.branch_name(task.issue_number, task.title))
        task.refresh_from_db(fields=["branch"])
    return (
        bool(services.candidate_fan_out(stage=stage, workflow=workflow, followup=followup, enqueue=enqueue))
        or stage.task.status != Task.Status.RUNNING
    )
