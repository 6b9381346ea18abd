"""Best of N (issue 25): the state changes of a stage that runs candidates.

A candidate is a Stage row of its own under the stage it runs for (`parent`, numbered from 1 in
`candidate`, at the parent's position): its own claim, lease, worker, attempts, results, worktree
and branch, so a candidate is a stage job like any other (it counts as one running attempt, the
reaper and cancel treat it as they treat any stage). The parent goes through three states in a
pass (a task's first pass, or a PR round):

1. queued -> `candidate_fan_out`: parked `pending` (no attempt counted), the candidates created
   queued and enqueued; refused before anything starts when a task budget cannot pay for them;
2. each candidate that ends for good -> `candidate_finished` (in .progress: the reaper ends
   candidates too): the last one queues the parent
   again (under a row lock on the parent, so exactly one of several finishing together does);
3. queued again -> the selection attempt (pipeline.attempt.selection), a normal attempt of the
   parent: it records every step in `candidate_info["passes"][pass]` before acting on it, so a
   re-run after a kill -9 finds the same judge answer and the same winner, and never runs a
   candidate again.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.functions import Now

from .. import budgets, git, repos
from ..lib.candidates import CandidateSpec, candidate_branch
from ..models import Round, Stage, StageResult, Task
from ..workflow import Workflow
from .events import event_status
from .progress import enqueue_stage_job, task_fail

FIRST_PASS = "first"


def pass_key(followup: Round | None) -> str:
    return f"round-{followup.pk}" if followup is not None else FIRST_PASS


def candidates_of(parent: Stage, key: str):
    return parent.candidates.filter(candidate_info__pass=key).order_by("candidate")


def candidate_step(*, stage: Stage, workflow: Workflow, followup: Round | None) -> str:
    """What a queued stage does now: "fan_out" (start its candidates), "select" (they all ended:
    choose one) or "" (an ordinary attempt: no candidates, a later building of the pass, or the
    pass's choice is made)."""
    if stage.parent_id:
        return ""
    try:
        cfg = workflow.stage(stage.name)
    except KeyError:
        return ""
    key = pass_key(followup)
    if candidates_of(stage, key).exists():
        chosen = ((stage.candidate_info.get("passes") or {}).get(key) or {}).get("chosen")
        return "" if chosen else "select"
    specs = cfg.candidates_for(followup.kind if followup is not None else None)
    if not specs:
        return ""
    if followup is None and stage.task.review_round > 1:
        return ""  # sent back by a review or failing tests: the winner's branch goes on, alone
    if followup is not None and StageResult.objects.filter(stage=stage, followup=followup).exists():
        return ""
    return "fan_out"


def candidate_fan_out(*, stage: Stage, workflow: Workflow, followup: Round | None, enqueue: bool = True) -> list[Stage]:
    """Start the candidates of a queued stage (see the module docstring). Returns them ([] when
    the stage was not queued any more, or the budget refused them and the task failed)."""
    task = stage.task
    cfg = workflow.stage(stage.name)
    specs = cfg.candidates_for(followup.kind if followup is not None else None)
    key = pass_key(followup)
    refusal = budgets.candidates_refusal(task=task, workflow=workflow, stage_cfg=cfg, specs=specs)
    with transaction.atomic():
        parked = Stage.objects.filter(pk=stage.pk, status=Stage.Status.QUEUED).update(
            status=Stage.Status.PENDING, lease_owner="", lease_expires_at=None, error=f"waiting for its {len(specs)} candidates"
        )
        if not parked:
            return []
        if refusal:
            Stage.objects.filter(pk=stage.pk).update(status=Stage.Status.FAILED, finished_at=Now(), error=refusal)
            event_status(
                task, f"stage {stage.name}: candidates refused before start: {refusal}", stage=stage.name, stage_status="failed"
            )
            task_fail(task=task, reason=f"stage {stage.name}: {refusal}", status=Task.Status.BUDGET_EXCEEDED)
            return []
        first = (stage.candidates.order_by("-candidate").values_list("candidate", flat=True).first() or 0) + 1
        made = []
        for i, spec in enumerate(specs):
            k = first + i
            made.append(
                Stage.objects.create(
                    task=task,
                    parent=stage,
                    candidate=k,
                    name=stage.name,
                    position=stage.position,
                    provider=spec.provider,
                    model=spec.model,
                    status=Stage.Status.QUEUED,
                    max_attempts=stage.max_attempts,
                    queued_at=Now(),
                    candidate_info={
                        "pass": key,
                        "spec": spec.to_json(),
                        "branch": candidate_branch(task.branch, k) if task.branch else "",
                    },
                )
            )
        labels = ", ".join(f"c{c.candidate} {CandidateSpec(**c.candidate_info['spec']).label()}" for c in made)
        event_status(
            task, f"stage {stage.name}: {len(made)} candidates started ({labels})", stage=stage.name, stage_status="pending"
        )
        if enqueue:
            for child in made:
                transaction.on_commit(lambda stage_id=child.pk: enqueue_stage_job(stage_id))
    return made


def candidate_info_update(*, stage: Stage, **values) -> None:
    """Merge `values` into a stage's `candidate_info` (under a row lock)."""
    with transaction.atomic():
        row = Stage.objects.select_for_update().get(pk=stage.pk)
        info = dict(row.candidate_info or {})
        info.update(values)
        Stage.objects.filter(pk=stage.pk).update(candidate_info=info)
        stage.candidate_info = info


def selection_record(*, parent: Stage, key: str, **values) -> dict:
    """Merge `values` into the parent's record of pass `key` and return the record (locked, so
    the first writer of a value wins: a value already there is kept)."""
    with transaction.atomic():
        row = Stage.objects.select_for_update().get(pk=parent.pk)
        info = dict(row.candidate_info or {})
        passes = dict(info.get("passes") or {})
        record = dict(passes.get(key) or {})
        for name, value in values.items():
            record.setdefault(name, value)
        passes[key] = record
        info["passes"] = passes
        Stage.objects.filter(pk=parent.pk).update(candidate_info=info)
        parent.candidate_info = info
    return record


def candidate_branches_remove(*, task: Task) -> list[str]:
    """A finished task's candidate branches, kept until now for a person to look at, removed
    from the origin (each once: marked in its `candidate_info`). Returns the names removed."""
    if task.is_active:
        return []
    removed = []
    for child in Stage.objects.filter(task=task, parent__isnull=False).order_by("id"):
        info = child.candidate_info or {}
        if not info.get("branch") or info.get("branch_removed"):
            continue
        try:
            repos.delete_branch(task.repository, info["branch"])
        except git.GitError as exc:
            event_status(task, f"candidate branch {info['branch']} not removed yet: {exc}")
            continue
        candidate_info_update(stage=child, branch_removed=True)
        removed.append(info["branch"])
    if removed:
        event_status(task, f"candidate branches removed: {', '.join(removed)}")
    return removed
