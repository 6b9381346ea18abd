"""Talking to a task from its page: the message box starts a round (`rounds.round_request`),
as an `@tacx <message>` comment on its pull request would, with the same rules, limits and
record. For a local repository it is the only way to ask for a follow-up.

Who may: `pipeline.retry_task` (running the task's agents again, as Retry does; on GitHub the
comment needs write access, the level that may retry there too)."""

from __future__ import annotations

import uuid

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from pipeline.models import Round, Task
from pipeline.services import rounds

from . import selectors
from .access import page_view

PERMISSION = "pipeline.retry_task"
MESSAGE_MAX = 20_000


class MessageForm(forms.Form):
    text = forms.CharField(max_length=MESSAGE_MAX, strip=True, widget=forms.Textarea(attrs={"rows": 3}))
    token = forms.UUIDField()


def draft_key(task_id: int) -> str:
    return f"tacx-message-draft-{task_id}"


def message_context(request: HttpRequest, task: Task) -> dict:
    """What the task page needs to show the box (or why it is not there)."""
    allowed = request.user.has_perm(PERMISSION)
    open_round = task.rounds.filter(status__in=Round.OPEN).exclude(kind=Round.Kind.COMMAND).order_by("id").first()
    closed = task.status in (Task.Status.CANCELLED, Task.Status.SKIPPED) or (
        not task.branch and task.status != Task.Status.AWAITING_APPROVAL
    )
    return {
        "can_message": allowed and not closed,
        "message_token": uuid.uuid4(),
        # A message that was not sent comes back in the box (nothing typed is lost).
        "message_draft": request.session.pop(draft_key(task.pk), "") if allowed and not closed else "",
        "message_open_round": open_round,
        "message_kind": "plan feedback" if task.status == Task.Status.AWAITING_APPROVAL else "follow-up round",
    }


@page_view(PERMISSION, require_POST)
def task_message(request: HttpRequest, task_id: int) -> HttpResponse:
    task = selectors.task_get(task_id)
    form = MessageForm(request.POST)
    if not form.is_valid():
        problems = "; ".join(
            f"{'the message' if name == 'text' else name}: {' '.join(e.rstrip('.') for e in errors)}"
            for name, errors in form.errors.items()
        )
        return _not_sent(request, task, problems)
    try:
        round_, created = rounds.round_request(
            task=task, actor=request.user.get_username(), text=form.cleaned_data["text"], token=str(form.cleaned_data["token"])
        )
    except ValueError as exc:
        return _not_sent(request, task, str(exc))
    if not created:
        messages.info(request, f"This message was already sent: round {round_.pk} ({round_.status}).")
    elif round_.status == Round.Status.REFUSED:
        messages.error(request, f"Round {round_.pk} refused: {round_.reason}")
    else:
        when = "starts when the task stops running" if task.status in Task.ACTIVE else "starts in a moment"
        messages.success(request, f"Round {round_.pk} queued ({round_.started_by()}): it {when}.")
    return redirect(task)


def _not_sent(request: HttpRequest, task: Task, why: str) -> HttpResponse:
    request.session[draft_key(task.pk)] = str(request.POST.get("text", ""))[:MESSAGE_MAX]
    messages.error(request, f"Not sent: {why}. Your message is kept in the box.")
    return redirect(task)
