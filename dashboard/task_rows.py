"""One row of the task list (the Tasks page and its live refresh), rendered in Python.

The row was a block of the `task_rows.html` template: about forty variable lookups and filters
per task, which the template engine resolves one by one (a context lookup, localisation and
escaping each). With 50 rows that was 19 ms of CPU per page, half of the whole page's time, and
the reason the page missed its 50 ms on a 10,000-task database while the API answered in 36 ms
(issue 23). The markup is the template's, unchanged; every value is escaped as the template
escaped it (`django.utils.html.escape` is `html.escape` of the text, which `_e` calls without
Django's lazy-string wrapper around it: that wrapper was a third of the row's time).
"""

from __future__ import annotations

import html

from django.template.defaultfilters import truncatechars
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from pipeline.models import Task

from .rendering import ago_text, duration_text, tokens_text, usd_text

ROW = (
    '<tr data-task="{pk}" data-status="{status}">\n'
    '      <td class="col-id"><a href="{url}" tabindex="-1">{pk}</a></td>\n'
    '      <td class="status"><span class="badge status-{status}">{status_display}</span></td>\n'
    '      <td class="col-optional">{repository}</td>\n'
    '      <td class="title"><a class="row-link" href="{url}" title="{repository}#{issue} {title}">#{issue} {short_title}</a></td>\n'
    '      <td class="current-stage">{stage}</td>\n'
    '      <td class="started"><time datetime="{moment_iso}" title="{moment_text} UTC">{queued}{moment_ago}</time></td>\n'
    '      <td class="elapsed col-optional" {since}>{elapsed}</td>\n'
    '      <td class="num col-optional">{tokens}</td>\n'
    '      <td class="num col-optional">{cost}</td>\n'
    '      <td class="result">{result}</td>\n'
    "    </tr>"
)


def _local(moment):
    return timezone.template_localtime(moment)


def _e(value: object) -> str:
    return html.escape(str(value))


def task_row_html(task: Task) -> SafeString:
    """The `<tr>` of `task` (a row of `selectors.task_list`: its repository selected, its
    current stage name and running usage annotated)."""
    now = timezone.now()
    url = reverse("dashboard:task-detail", args=[task.pk])
    moment = task.started_at or task.triggered_at
    since = f'data-since="{_e(_local(task.started_at).isoformat())}"' if task.started_at and not task.finished_at else ""
    if task.pr_url:
        result = (
            f'<a href="{_e(task.pr_url)}" rel="noopener noreferrer">PR{f" #{_e(task.pr_number)}" if task.pr_number else ""}</a>'
        )
    elif task.status == "succeeded" and task.branch and task.repository.kind == "local":
        branch = _e(task.branch)
        result = f'<a href="{_e(url)}#result" title="{branch}: pushed to the repository\'s origin"><code class="branch">{branch}</code></a>'
    elif task.branch:
        result = f'<code class="branch" title="{_e(task.branch)}">{_e(task.branch)}</code>'
    else:
        result = ""
    return mark_safe(  # every value escaped by _e; the markup is ours
        ROW.format(
            pk=_e(task.pk),
            status=_e(task.status),
            url=_e(url),
            status_display=_e(task.get_status_display()),
            repository=_e(task.repository.full_name),
            issue=_e(task.issue_number),
            title=_e(task.title),
            short_title=_e(truncatechars(task.title, 70)),
            stage=_e(task.current_stage_name or "–"),
            # The `date` filter's "c" is isoformat(); "Y-m-d H:i:s" is this strftime.
            moment_iso=_e(_local(moment).isoformat() if moment else ""),
            moment_text=_e(_local(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else ""),
            queued="" if task.started_at else "queued ",
            moment_ago=_e(ago_text((now - moment).total_seconds()) if moment else "–"),
            since=since,
            elapsed=_e(duration_text(((task.finished_at or now) - task.started_at).total_seconds()) if task.started_at else "–"),
            tokens=_e(tokens_text(task.total_tokens + (task.running_tokens or 0))),
            cost=_e(usd_text((task.cost_usd or 0) + (task.running_cost or 0))),
            result=result,
        )
    )
