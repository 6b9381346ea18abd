"""Every change of pipeline state goes through these functions (coordinator, dashboard, admin,
management commands and q2 jobs call them; none writes the tables itself).

Rules kept here:
- a task is created idempotently: the partial unique constraint refuses a second active task for
  one issue, and `task_create` returns the existing one instead;
- stages are claimed by conditional UPDATE (see `pipeline.attempt`), never by trusting the queue;
- the next stage is enqueued after commit, and only from our own state (no q2 chains).

This package is a face: the functions live in one module per subject (`events`, `approval`,
`progress`, `tasks`, `rounds`, `repositories`, `worktrees`, `memory`, `budget_pauses`, `budget_answers`, `pull_outcomes`, `candidates`) and are re-exported here, so
`services.task_create(...)` works as before. Patch a name where it is defined (e.g.
`pipeline.services.tasks.task_workflow_read`), not here. Nothing in this package imports
`pipeline.attempt`: services change state, the attempt runs agents.
"""

from ..lib.untrusted import sanitize_issue_text, sanitize_issue_title
from . import rounds
from .approval import (
    approval_required,
    choice_approval_required,
    review_requests_used,
    review_rounds_used,
    running_round,
    task_await_approval,
    test_rounds_failed,
)
from .budget_answers import NotPaused, budget_pause_expire, budget_raise, budget_stop
from .budget_pauses import budget_pause_begin, budget_pause_drop, budget_pause_wait, open_pause, pause_continued
from .candidates import (
    awaiting_choice,
    candidate_branches_remove,
    candidate_choose,
    candidate_fan_out,
    candidate_info_update,
    candidate_step,
    candidates_approve,
    candidates_await_approval,
    candidates_of,
    pass_key,
    selection_record,
    selection_update,
)
from .events import event_status, events_prune
from .memory import (
    memory_accept,
    memory_add,
    memory_delete,
    memory_edit,
    memory_in_prompts,
    memory_limits,
    memory_propose,
    memory_reject,
    memory_text_clean,
)
from .progress import (
    candidate_finished,
    enqueue_stage_job,
    lease_deadline,
    result_add_to_totals,
    review_requests_changes,
    stage_hand_back,
    stage_jobs,
    stage_queue,
    stage_reap_expired,
    stage_requeue_lost,
    stage_succeeded_advance,
    task_cancel,
    task_fail,
    tests_failed_back_to_building,
)
from .pull_outcomes import pull_opened_record, pull_outcome_of, pull_outcome_record
from .repositories import (
    repository_add,
    repository_poll_claim,
    repository_poll_etag_set,
    repository_poll_succeeded,
    repository_setup_cache_clear,
    repository_workflow_set,
    tracker_settings_problem,
)
from .tasks import (
    task_create,
    task_dispatch,
    task_hold,
    task_progress_comment_set,
    task_release,
    task_retry,
    task_skip,
    task_start,
    task_submit,
    task_workflow_read,
    workflow_error_fail,
    workflow_machine_check,
)
from .worktrees import task_worktree_record, task_worktree_remove, worktrees_of_lost_machines_expire

__all__ = [
    "awaiting_choice",
    "candidate_branches_remove",
    "candidate_choose",
    "candidates_approve",
    "candidates_await_approval",
    "selection_update",
    "candidate_fan_out",
    "candidate_finished",
    "candidate_info_update",
    "candidate_step",
    "candidates_of",
    "pass_key",
    "selection_record",
    "NotPaused",
    "pull_opened_record",
    "pull_outcome_of",
    "pull_outcome_record",
    "approval_required",
    "choice_approval_required",
    "budget_pause_begin",
    "budget_pause_drop",
    "budget_pause_expire",
    "budget_pause_wait",
    "budget_raise",
    "budget_stop",
    "open_pause",
    "pause_continued",
    "enqueue_stage_job",
    "event_status",
    "events_prune",
    "lease_deadline",
    "memory_accept",
    "memory_add",
    "memory_delete",
    "memory_edit",
    "memory_in_prompts",
    "memory_limits",
    "memory_propose",
    "memory_reject",
    "memory_text_clean",
    "repository_add",
    "repository_workflow_set",
    "repository_poll_claim",
    "repository_poll_succeeded",
    "tracker_settings_problem",
    "repository_poll_etag_set",
    "repository_setup_cache_clear",
    "result_add_to_totals",
    "review_requests_changes",
    "review_rounds_used",
    "review_requests_used",
    "test_rounds_failed",
    "rounds",
    "running_round",
    "sanitize_issue_text",
    "sanitize_issue_title",
    "stage_hand_back",
    "stage_jobs",
    "stage_queue",
    "stage_reap_expired",
    "stage_requeue_lost",
    "stage_succeeded_advance",
    "task_await_approval",
    "task_cancel",
    "task_create",
    "task_dispatch",
    "task_fail",
    "task_hold",
    "task_progress_comment_set",
    "task_release",
    "task_retry",
    "task_skip",
    "task_start",
    "task_submit",
    "task_workflow_read",
    "task_worktree_record",
    "task_worktree_remove",
    "worktrees_of_lost_machines_expire",
    "tests_failed_back_to_building",
    "workflow_error_fail",
    "workflow_machine_check",
]
