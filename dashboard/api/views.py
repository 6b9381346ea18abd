"""The REST API: one view per operation (HackSoftware's Django-Styleguide). Each parses its input
with an input serializer, calls one selector or service, and answers with an output serializer.
Errors come out in one shape (see ``errors``)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pipeline import services
from pipeline.models import AgentEvent, MemoryEntry, Repository, Task
from pipeline.services import rounds
from pipeline.workflow import WorkflowError

from .. import selectors, stats, streams
from . import serializers as s
from .errors import Conflict

ERRORS = {
    400: OpenApiResponse(s.ErrorOut, description="Bad input; `field` names the parameter"),
    401: OpenApiResponse(s.ErrorOut, description="Not authenticated"),
    403: OpenApiResponse(s.ErrorOut, description="Not allowed: the user lacks the operation's permission"),
}
NOT_FOUND = {404: OpenApiResponse(s.ErrorOut, description="No task with this id")}
CONFLICT = {409: OpenApiResponse(s.ErrorOut, description="The task's state does not allow this")}
MEMORY_NOT_FOUND = {404: OpenApiResponse(s.ErrorOut, description="No memory entry with this id")}


def _query(serializer_class: type[s.serializers.Serializer], request: Request) -> dict:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data



def task_detail_response(task_id: int, **response: Any) -> Response:
    """The task as it is now in the database, with its stages (the answer of every task action)."""
    task = selectors.task_get(task_id)
    task.stage_list = selectors.task_stages(task)
    return Response(s.TaskDetailOut(task).data, **response)

class TaskListApi(APIView):
    @extend_schema(operation_id="tasks_list", parameters=[s.TaskListQuery], responses={200: s.TaskPageOut, **ERRORS})
    def get(self, request: Request) -> Response:
        query = _query(s.TaskListQuery, request)
        limit, offset = query.pop("limit"), query.pop("offset")
        tasks = selectors.task_list(**query)
        count = tasks.count()
        page = list(tasks[offset : offset + limit])

        def link(new_offset: int) -> str:
            params = request.query_params.copy()
            params["offset"], params["limit"] = str(new_offset), str(limit)
            return request.build_absolute_uri(f"{request.path}?{params.urlencode()}")

        body = {
            "count": count,
            "limit": limit,
            "offset": offset,
            "next": link(offset + limit) if offset + limit < count else None,
            "previous": link(max(0, offset - limit)) if offset > 0 else None,
            "results": page,
        }
        return Response(s.TaskPageOut(body).data)


class TaskCreateApi(APIView):
    required_permission = "pipeline.add_task"

    @extend_schema(
        operation_id="tasks_create",
        request=s.TaskCreateIn,
        responses={
            201: s.TaskDetailOut,
            200: OpenApiResponse(s.TaskDetailOut, description="The issue already has an active task"),
            **ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        data = s.TaskCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        args = data.validated_data
        repository = selectors.repository_find(args["repository"])
        if repository is None:
            raise ValidationError({"repository": [f"no repository {args['repository']!r}"]})
        if repository.kind != Repository.Kind.LOCAL:
            raise ValidationError({"repository": ["tasks of GitHub repositories start from their issues; pick a local repository"]})
        try:
            task, created = services.task_submit(
                repository=repository,
                issue_number=args["issue_number"],
                title=args["title"],
                body=args["body"],
                workflow_text=args["workflow"],
                triggered_by=request.user.get_username(),
                trigger_source="api",
                start=args["start"],
            )
        except WorkflowError as exc:
            raise ValidationError({"workflow": [str(exc)]}) from None
        except ValueError as exc:
            raise ValidationError({"title": [str(exc)]}) from None
        headers = {"Location": reverse("api:task-detail", args=[task.pk])}
        return task_detail_response(task.pk, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK, headers=headers)


class TaskDetailApi(APIView):
    @extend_schema(operation_id="tasks_retrieve", responses={200: s.TaskDetailOut, **ERRORS, **NOT_FOUND})
    def get(self, request: Request, task_id: int) -> Response:
        return task_detail_response(task_id)


# (A comment, not a docstring: drf-spectacular would show a docstring as every subclass's description.)
# POST on one task: `act` on it, then answer with the task as it is now; 409 with what `act`
# returns when the task's state does not allow the action.
class _TaskActionApi(APIView):
    def act(self, request: Request, task: Task) -> str | None:
        raise NotImplementedError

    def post(self, request: Request, task_id: int) -> Response:
        refused = self.act(request, selectors.task_get(task_id))
        if refused:
            raise Conflict(refused)
        return task_detail_response(task_id)


def _task_action(operation_id: str):
    """The OpenAPI description of a `_TaskActionApi`."""
    responses = {200: s.TaskDetailOut, **ERRORS, **NOT_FOUND, **CONFLICT}
    return extend_schema_view(post=extend_schema(operation_id=operation_id, request=None, responses=responses))


@_task_action("tasks_retry")
class TaskRetryApi(_TaskActionApi):
    required_permission = "pipeline.retry_task"

    def act(self, request: Request, task: Task) -> str | None:
        try:
            services.task_retry(task=task)
        except ValueError as exc:
            return str(exc)
        return None


@_task_action("tasks_cancel")
class TaskCancelApi(_TaskActionApi):
    required_permission = "pipeline.cancel_task"

    def act(self, request: Request, task: Task) -> str | None:
        if services.task_cancel(task=task, reason=f"cancelled by {request.user.get_username()}"):
            return None
        return f"task {task.pk} is {task.status}; only queued, waiting or running tasks can be cancelled"


@_task_action("tasks_approve")
class TaskApproveApi(_TaskActionApi):
    """Approve the plan of a task awaiting approval (workflow `approval: plan`)."""

    required_permission = "pipeline.approve_task"

    def act(self, request: Request, task: Task) -> str | None:
        if rounds.task_approve(task=task, approved_by=request.user.get_username()):
            return None
        return f"task {task.pk} is {task.status}; only a task awaiting approval can be approved"


class TaskBudgetRaiseApi(APIView):
    """Raise the budget that paused a task (`on_exceed: pause`) by `usd` or `tokens`; the stage
    goes on where it stopped."""

    required_permission = "pipeline.approve_task"

    @extend_schema(operation_id="tasks_budget_raise", request=s.BudgetRaiseIn, responses={200: s.TaskDetailOut, **ERRORS, **NOT_FOUND, **CONFLICT})
    def post(self, request: Request, task_id: int) -> Response:
        task = selectors.task_get(task_id)
        data = s.BudgetRaiseIn(data=request.data)
        data.is_valid(raise_exception=True)
        usd, tokens = data.validated_data.get("usd"), data.validated_data.get("tokens")
        try:
            services.budget_raise(task=task, by=request.user.get_username(), source="api", usd=usd, tokens=tokens)
        except services.NotPaused as exc:
            raise Conflict(str(exc)) from None
        except ValueError as exc:
            raise ValidationError({"usd" if usd is not None else "tokens": [str(exc)]}) from None
        return task_detail_response(task_id)


class TaskBudgetStopApi(APIView):
    """End a task paused at a budget (status budget_exceeded; its work stays on the branch)."""

    required_permission = "pipeline.approve_task"

    @extend_schema(operation_id="tasks_budget_stop", request=None, responses={200: s.TaskDetailOut, **ERRORS, **NOT_FOUND, **CONFLICT})
    def post(self, request: Request, task_id: int) -> Response:
        task = selectors.task_get(task_id)
        try:
            services.budget_stop(task=task, by=request.user.get_username(), source="api")
        except services.NotPaused as exc:
            raise Conflict(str(exc)) from None
        return task_detail_response(task_id)


class TaskStagesApi(APIView):
    @extend_schema(operation_id="tasks_stages", responses={200: s.StageOut(many=True), **ERRORS, **NOT_FOUND})
    def get(self, request: Request, task_id: int) -> Response:
        task = selectors.task_get(task_id)
        return Response(s.StageOut(selectors.task_stages(task), many=True).data)


class TaskAttemptsApi(APIView):
    @extend_schema(operation_id="tasks_attempts", responses={200: s.AttemptOut(many=True), **ERRORS, **NOT_FOUND})
    def get(self, request: Request, task_id: int) -> Response:
        task = selectors.task_get(task_id)
        return Response(s.AttemptOut(selectors.task_attempts(task), many=True).data)


class TaskEventsApi(APIView):
    @extend_schema(operation_id="tasks_events", parameters=[s.EventsQuery], responses={200: s.EventPageOut, **ERRORS, **NOT_FOUND})
    def get(self, request: Request, task_id: int) -> Response:
        query = _query(s.EventsQuery, request)
        task = selectors.task_get(task_id)
        page = streams.events_after(
            after=query["after"],
            task_id=task.pk,
            limit=query["limit"],
            queryset=AgentEvent.objects.select_related("result__stage"),
        )
        body = {
            "events": page.events,
            "next_after": page.last_id or query["after"],
            "has_more": page.has_more,
            "held_back": page.held_back,
        }
        return Response(s.EventPageOut(body).data)


class StatsApi(APIView):
    @extend_schema(operation_id="stats", parameters=[s.StatsQuery], responses={200: s.StatsOut, **ERRORS})
    def get(self, request: Request) -> Response:
        query = _query(s.StatsQuery, request)
        return Response(s.StatsOut(stats.stats_compute(days=query["days"])).data)


class WorkersApi(APIView):
    @extend_schema(operation_id="workers", parameters=[s.WorkersQuery], responses={200: s.WorkerOut(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        query = _query(s.WorkersQuery, request)
        workers = list(selectors.workers_live())
        if query["include_exited"]:
            workers += list(selectors.workers_recent())
        return Response(s.WorkerOut(workers, many=True).data)


# --- a repository's memory (README "A memory that carries over") ----------------------------------


def memory_entry_response(entry: MemoryEntry, **response: Any) -> Response:
    """One entry as it is now, with whether later prompts carry it."""
    entry = selectors.memory_get(entry.pk)
    given = selectors.memory_given_ids([entry.repository_id])
    return Response(s.MemoryEntryOut(entry, context={"given": given}).data, **response)


def _memory_repository(value: str) -> Repository:
    repository = selectors.repository_find(value)
    if repository is None:
        raise ValidationError({"repository": [f"no repository {value!r}"]})
    return repository


class MemoryListApi(APIView):
    """The memory entries of one repository (or all), proposals and rejected ones included."""

    required_permission = "pipeline.view_memoryentry"

    @extend_schema(operation_id="memory_list", parameters=[s.MemoryListQuery], responses={200: s.MemoryEntryOut(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        query = _query(s.MemoryListQuery, request)
        repository = _memory_repository(query["repository"]) if query.get("repository") else None
        entries = list(selectors.memory_list(repository=repository, status=query.get("status")))
        given = selectors.memory_given_ids({e.repository_id for e in entries})
        return Response(s.MemoryEntryOut(entries, many=True, context={"given": given}).data)


class MemoryCreateApi(APIView):
    """A person's own entry: accepted at once."""

    required_permission = "pipeline.add_memoryentry"

    @extend_schema(operation_id="memory_create", request=s.MemoryCreateIn, responses={201: s.MemoryEntryOut, **ERRORS})
    def post(self, request: Request) -> Response:
        data = s.MemoryCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        repository = _memory_repository(data.validated_data["repository"])
        try:
            entry = services.memory_add(repository=repository, text=data.validated_data["text"], by=request.user.get_username())
        except ValueError as exc:
            raise ValidationError({"text": [str(exc)]}) from None
        headers = {"Location": reverse("api:memory-detail", args=[entry.pk])}
        return memory_entry_response(entry, status=status.HTTP_201_CREATED, headers=headers)


class MemoryDetailApi(APIView):
    required_permission = "pipeline.view_memoryentry"

    @extend_schema(operation_id="memory_retrieve", responses={200: s.MemoryEntryOut, **ERRORS, **MEMORY_NOT_FOUND})
    def get(self, request: Request, entry_id: int) -> Response:
        return memory_entry_response(selectors.memory_get(entry_id))


class MemoryUpdateApi(APIView):
    """New text for an entry (its status stays)."""

    required_permission = "pipeline.change_memoryentry"

    @extend_schema(operation_id="memory_update", request=s.MemoryUpdateIn, responses={200: s.MemoryEntryOut, **ERRORS, **MEMORY_NOT_FOUND})
    def post(self, request: Request, entry_id: int) -> Response:
        entry = selectors.memory_get(entry_id)
        data = s.MemoryUpdateIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            services.memory_edit(entry=entry, text=data.validated_data["text"], by=request.user.get_username())
        except ValueError as exc:
            raise ValidationError({"text": [str(exc)]}) from None
        return memory_entry_response(entry)


class MemoryAcceptApi(APIView):
    """Accept an entry: later prompts of its repository carry it."""

    required_permission = "pipeline.change_memoryentry"

    @extend_schema(operation_id="memory_accept", request=None, responses={200: s.MemoryEntryOut, **ERRORS, **MEMORY_NOT_FOUND})
    def post(self, request: Request, entry_id: int) -> Response:
        entry = services.memory_accept(entry=selectors.memory_get(entry_id), by=request.user.get_username())
        return memory_entry_response(entry)


class MemoryRejectApi(APIView):
    """Reject an entry: never used, and a proposal saying the same is left out."""

    required_permission = "pipeline.change_memoryentry"

    @extend_schema(operation_id="memory_reject", request=None, responses={200: s.MemoryEntryOut, **ERRORS, **MEMORY_NOT_FOUND})
    def post(self, request: Request, entry_id: int) -> Response:
        entry = services.memory_reject(entry=selectors.memory_get(entry_id), by=request.user.get_username())
        return memory_entry_response(entry)


class MemoryDeleteApi(APIView):
    required_permission = "pipeline.delete_memoryentry"

    @extend_schema(operation_id="memory_delete", request=None, responses={204: None, **ERRORS, **MEMORY_NOT_FOUND})
    def post(self, request: Request, entry_id: int) -> Response:
        services.memory_delete(entry=selectors.memory_get(entry_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(exclude=True)
class NotFoundApi(APIView):
    """Unknown API paths: the error shape instead of Django's HTML 404 page."""

    permission_classes = ()
    authentication_classes = ()

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        raise NotFound("No such API endpoint.")
