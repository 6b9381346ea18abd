"""A repository's memory: short lessons (how to build it, a quirk of its tests, a convention) that
its later tasks' prompts carry.

Agents propose entries (read back through the hand-back gate by `pipeline.attempt.memory`);
because whoever writes an issue can steer the agent, an agent's entry stays `proposed` until a
person with the `pipeline.change_memoryentry` permission accepts it, unless the repository set
`memory_auto_accept`. A person's own entry is accepted at once. Only accepted entries reach a
prompt, fenced as untrusted (they were written by agents), within `MEMORY_PROMPT_MAX_CHARS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..lib.redaction import redact
from ..lib.untrusted import sanitize_issue_title
from ..models import MemoryEntry, Repository, StageResult, Task


@dataclass(frozen=True)
class MemoryLimits:
    file_max_bytes: int = 16 * 1024  # the memory file an agent leaves; a larger one is refused unread
    entries_per_task: int = 5  # proposals kept from one task, all its attempts together
    entry_max_chars: int = 500  # one entry, after clean-up
    prompt_max_chars: int = 8000  # accepted entries' text in one prompt


def memory_limits() -> MemoryLimits:
    """The caps from the settings (`TACX_MEMORY_*`), each at least 1."""
    tacx, default = settings.TACX, MemoryLimits()
    return MemoryLimits(
        file_max_bytes=max(1, int(tacx.get("MEMORY_FILE_MAX_BYTES", default.file_max_bytes))),
        entries_per_task=max(1, int(tacx.get("MEMORY_ENTRIES_PER_TASK", default.entries_per_task))),
        entry_max_chars=max(1, int(tacx.get("MEMORY_ENTRY_MAX_CHARS", default.entry_max_chars))),
        prompt_max_chars=max(1, int(tacx.get("MEMORY_PROMPT_MAX_CHARS", default.prompt_max_chars))),
    )


def memory_text_clean(text: str) -> str:
    """An entry as it is stored: one line of visible text (hidden markup, invisible and control
    characters stripped, whitespace collapsed), the secrets TAC-X knows redacted. Raises
    ValueError saying what is wrong when nothing is left or it is over the length limit."""
    clean = redact(sanitize_issue_title(text or ""))
    if not clean:
        raise ValueError("an entry cannot be empty")
    limit = memory_limits().entry_max_chars
    if len(clean) > limit:
        raise ValueError(f"an entry is at most {limit} characters; this one has {len(clean)}")
    return clean


def _same(text: str) -> str:
    """What two entries share when they say the same thing (case and spacing aside)."""
    return " ".join(text.casefold().split())


def memory_propose(*, task: Task, result: StageResult | None, texts: list[str], proposer: str) -> tuple[list[MemoryEntry], list[str]]:
    """Entries an agent of `task` proposed in attempt `result`, added to the repository's memory
    as `proposed` (or `accepted` when the repository set `memory_auto_accept`). At most
    `MEMORY_ENTRIES_PER_TASK` per task (all its attempts together); an entry that is empty, too
    long, or already in the memory (in any status: a rejected lesson is not proposed again) is
    left out. Returns the entries made and one note per entry left out."""
    limits = memory_limits()
    notes: list[str] = []
    created: list[MemoryEntry] = []
    # The repository's setting now, not as it was when the task started.
    auto = Repository.objects.filter(pk=task.repository_id).values_list("memory_auto_accept", flat=True).first() or False
    now = timezone.now()
    with transaction.atomic():
        room = limits.entries_per_task - MemoryEntry.objects.filter(source_task=task).count()
        over = 0
        known = {_same(t) for t in MemoryEntry.objects.filter(repository_id=task.repository_id).values_list("text", flat=True)}
        for number, raw in enumerate(texts, start=1):
            try:
                text = memory_text_clean(raw)
            except ValueError as exc:
                notes.append(f"entry {number}: {exc}; left out")
                continue
            if _same(text) in known:
                notes.append(f"entry {number}: already in the memory; left out")
                continue
            if room <= 0:
                over += 1
                continue
            entry = MemoryEntry.objects.create(
                repository_id=task.repository_id,
                text=text,
                status=MemoryEntry.Status.ACCEPTED if auto else MemoryEntry.Status.PROPOSED,
                source_task=task,
                source_result=result,
                proposer=proposer[:200],
                created_at=now,
                decided_by="the repository's setting memory_auto_accept" if auto else "",
                decided_at=now if auto else None,
            )
            created.append(entry)
            known.add(_same(text))
            room -= 1
    if over:
        notes.append(f"{over} more over the limit of {limits.entries_per_task} entries per task; left out")
    return created, notes


def memory_add(*, repository: Repository, text: str, by: str) -> MemoryEntry:
    """An entry a person writes: accepted at once (they hold the permission to accept)."""
    clean = memory_text_clean(text)
    now = timezone.now()
    return MemoryEntry.objects.create(
        repository=repository, text=clean, status=MemoryEntry.Status.ACCEPTED, proposer=by[:200], created_at=now, decided_by=by[:150], decided_at=now
    )


def _decide(entry: MemoryEntry, status: str, by: str) -> MemoryEntry:
    entry.status, entry.decided_by, entry.decided_at = status, by[:150], timezone.now()
    entry.save(update_fields=["status", "decided_by", "decided_at"])
    return entry


def memory_accept(*, entry: MemoryEntry, by: str) -> MemoryEntry:
    """From now on later tasks' prompts carry it."""
    return _decide(entry, MemoryEntry.Status.ACCEPTED, by)


def memory_reject(*, entry: MemoryEntry, by: str) -> MemoryEntry:
    """Never used (and never proposed again: a proposal saying the same is left out)."""
    return _decide(entry, MemoryEntry.Status.REJECTED, by)


def memory_edit(*, entry: MemoryEntry, text: str, by: str) -> MemoryEntry:
    """New text for an entry, cleaned and capped as a proposal's; its status stays."""
    entry.text, entry.edited_by, entry.edited_at = memory_text_clean(text), by[:150], timezone.now()
    entry.save(update_fields=["text", "edited_by", "edited_at"])
    return entry


def memory_delete(*, entry: MemoryEntry) -> None:
    """Gone for good (the attempts that carried it keep its id in `memory_entries`)."""
    entry.delete()


def memory_in_prompts(*, repository: Repository) -> tuple[list[MemoryEntry], list[MemoryEntry]]:
    """(given, left out): the repository's accepted entries, oldest first, that fit together in
    `MEMORY_PROMPT_MAX_CHARS`; an entry that does not fit is left out and the next one tried."""
    budget = memory_limits().prompt_max_chars
    given: list[MemoryEntry] = []
    left_out: list[MemoryEntry] = []
    for entry in MemoryEntry.objects.filter(repository=repository, status=MemoryEntry.Status.ACCEPTED).order_by("id"):
        if len(entry.text) <= budget:
            given.append(entry)
            budget -= len(entry.text)
        else:
            left_out.append(entry)
    return given, left_out
