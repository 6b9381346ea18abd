"""Agent CLI sessions kept between attempts, so a follow-up round can resume one.

Every attempt runs with a private HOME that is deleted afterwards (see `pipeline.attempt`), and the CLIs
keep their sessions there. After a building attempt its session files are copied to
`VAR_DIR/sessions/<task id>/` (the same layout as a HOME); a round that resumes the session
copies them into its new private HOME first. Only the files of that one session are kept.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.db.models import Sum

from .models import Round, StageResult, Task

log = logging.getLogger(__name__)


def session_store(task_id: int) -> Path:
    return Path(settings.VAR_DIR) / "sessions" / str(int(task_id))


def session_keep(*, provider, home: Path, session_id: str, task_id: int) -> int:
    """Copy the session's files out of the attempt's HOME; returns how many were kept."""
    store = session_store(task_id)
    kept = 0
    root = Path(home).resolve()
    for pattern in provider.session_globs(session_id):
        for path in Path(home).glob(pattern):
            # The HOME was the agent's: a glob follows a symlinked directory, so what it found
            # must really lie inside the HOME (not in another task's kept sessions).
            if path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(root):
                target = store / path.relative_to(home)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                kept += 1
    return kept


def session_available(*, provider, session_id: str, task_id: int, cwd: str) -> bool:
    return provider.can_resume(session_id, cwd=cwd, env={"HOME": str(session_store(task_id))})


def session_restore(*, provider, home: Path, session_id: str, task_id: int, cwd: str) -> int:
    """Copy a kept session into a new attempt's HOME (where the CLI looks for it from `cwd`)."""
    store = session_store(task_id)
    restored = 0
    for pattern in provider.session_globs(session_id):
        for path in store.glob(pattern):
            for rel in provider.session_targets(path.relative_to(store), cwd=cwd):
                target = Path(home) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                restored += 1
    return restored


def session_tokens(session_id: str, *, task: Task, before: Round) -> int:
    """The input a session had consumed (fresh + cache read + cache write) over its attempts
    before `before` (a resumed session keeps its id): the context a cold start would have to
    rebuild, so what resuming it saved (an estimate)."""
    rows = StageResult.objects.filter(task=task, session_id=session_id).exclude(followup=before).aggregate(
        i=Sum("input_tokens"), cr=Sum("cache_read_tokens"), cw=Sum("cache_write_tokens")
    )
    return sum(v or 0 for v in rows.values())


def resumable_session(*, task: Task, stage_name: str, provider: str) -> str:
    """The session id of the last successful attempt of this stage with the same provider."""
    return (
        StageResult.objects.filter(task=task, stage__name=stage_name, stage__parent__isnull=True, success=True, provider=provider)
        .exclude(session_id="")
        .exclude(output_file="selection")  # the judge's session (best of N) is not the builder's
        .order_by("-id")
        .values_list("session_id", flat=True)
        .first()
        or ""
    )
