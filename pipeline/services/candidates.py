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
from django.utils import timezone

from .. import budgets, git, repos
from ..lib.candidates import CandidateSpec, candidate_branch
from ..models import Round, Stage, StageResult, Task
from ..workflow import Workflow
from .events import event_status
from .progress import enqueue_stage_job, stage_queue, task_fail

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
        record = (stage.candidate_info.get("passes") or {}).get(key) or {}
        # Done once the chosen candidate is the branch (a person's later choice moves it again).
        return "" if record.get("chosen") and record.get("applied") == record["chosen"] else "select"
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


def candidates_retire(*, parent: Stage) -> list[int]:
    """On a retry: when the parent's first pass has candidates but no choice (they all failed,
    or the task was cancelled or stopped before a choice), set that pass aside (its record and
    its candidates go under "first-retired-<n>", kept for the record and the clean-up) so that
    the retried stage fans out new candidates, numbered after the old ones, instead of running
    the selection again over the same failures. Returns the candidates set aside. A pass with a
    choice is kept (the retry goes on from it)."""
    with transaction.atomic():
        row = Stage.objects.select_for_update().get(pk=parent.pk)
        info = dict(row.candidate_info or {})
        passes = dict(info.get("passes") or {})
        if (passes.get(FIRST_PASS) or {}).get("chosen"):
            return []
        old = list(candidates_of(row, FIRST_PASS).values_list("pk", "candidate"))
        if not old:
            return []
        n = 1 + sum(1 for name in passes if name.startswith(f"{FIRST_PASS}-retired-"))
        retired = f"{FIRST_PASS}-retired-{n}"
        if FIRST_PASS in passes:
            passes[retired] = passes.pop(FIRST_PASS)
        info["passes"] = passes
        Stage.objects.filter(pk=row.pk).update(candidate_info=info)
        parent.candidate_info = info
        for child in Stage.objects.select_for_update().filter(pk__in=[pk for pk, _ in old]):
            Stage.objects.filter(pk=child.pk).update(candidate_info={**child.candidate_info, "pass": retired})
    return [k for _, k in old]


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


def selection_update(*, parent: Stage, key: str, **values) -> dict:
    """Overwrite `values` in the parent's record of pass `key` (a person's choice, what was applied)."""
    with transaction.atomic():
        row = Stage.objects.select_for_update().get(pk=parent.pk)
        info = dict(row.candidate_info or {})
        passes = dict(info.get("passes") or {})
        passes[key] = {**(passes.get(key) or {}), **values}
        info["passes"] = passes
        Stage.objects.filter(pk=parent.pk).update(candidate_info=info)
        parent.candidate_info = info
    return passes[key]


def awaiting_choice(task: Task) -> tuple[Stage, str, dict] | None:
    """The stage, pass and record whose choice waits for a person (`approval: candidates`)."""
    if task.status != Task.Status.AWAITING_APPROVAL:
        return None
    for parent in Stage.objects.filter(task=task, parent__isnull=True).exclude(candidate_info={}).order_by("-position"):
        for key, record in (parent.candidate_info.get("passes") or {}).items():
            if record.get("chosen") and not record.get("approved"):
                return parent, key, record
    return None


def candidates_await_approval(*, task: Task, chosen: int) -> bool:
    """running -> awaiting_approval after a selection (`approval: candidates`)."""
    with transaction.atomic():
        changed = Task.objects.filter(pk=task.pk, status=Task.Status.RUNNING).update(
            status=Task.Status.AWAITING_APPROVAL,
            status_reason=f"the choice of candidate c{chosen} awaits approval: `/tacx approve`, or choose another on the task page",
        )
        if changed:
            task.refresh_from_db()
            event_status(task, f"candidate c{chosen} chosen: awaiting approval")
    return bool(changed)


def candidate_choose(*, task: Task, k: int, chosen_by: str) -> str:
    """A person's choice of candidate `k` while the task waits at `approval: candidates`: "" or
    why not. The branch moves when the choice is approved (the selection runs again with it)."""
    waiting = awaiting_choice(task)
    if waiting is None:
        return f"the task is {task.status}, not waiting for the candidates' choice"
    parent, key, record = waiting
    if k not in (record.get("passing") or []):
        return (
            f"c{k} is not a candidate whose tests passed (those are: {', '.join(f'c{n}' for n in record.get('passing') or [])})"
        )
    if k == record["chosen"]:
        return ""
    was = f"c{record['chosen']} by {record.get('rule')}"
    selection_update(
        parent=parent, key=key, chosen=k, rule="person", reasons=f"chosen by {chosen_by} (the selection had chosen {was})"
    )
    event_status(task, f"candidate c{k} chosen by {chosen_by} instead of {was}", stage=parent.name)
    return ""


def candidates_approve(*, task: Task, approved_by: str, enqueue: bool = True) -> bool:
    """Approve the choice a task waits with: the selection runs again when a person chose
    another candidate (it moves the branch), else the stage after it is queued."""
    waiting = awaiting_choice(task)
    if waiting is None:
        return False
    parent, key, record = waiting
    with transaction.atomic():
        if not Task.objects.filter(pk=task.pk, status=Task.Status.AWAITING_APPROVAL).update(
            status=Task.Status.RUNNING, status_reason=""
        ):
            return False
        task.refresh_from_db()
        selection_update(parent=parent, key=key, approved=approved_by)
        event_status(task, f"candidate c{record['chosen']} approved by {approved_by}")
        if record.get("applied") != record["chosen"]:
            stage_queue(stage=parent, enqueue=enqueue, force=True)
            return True
        nxt = task.stages.filter(parent__isnull=True, position__gt=parent.position).order_by("position").first()
        if nxt is None:
            Task.objects.filter(pk=task.pk).update(status=Task.Status.SUCCEEDED, finished_at=timezone.now())
        else:
            stage_queue(stage=nxt, enqueue=enqueue, force=True)
    return True
