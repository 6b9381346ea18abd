"""The evaluation endpoints: runs with their figures, one run's results, and a run's export
(JSONL in SWE-bench's predictions shape, with outcomes and metrics)."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluation import selectors
from evaluation.models import EvalResult, EvalRun

from .serializers import ErrorOut

ERRORS = {401: OpenApiResponse(ErrorOut, description="Not authenticated"), 403: OpenApiResponse(ErrorOut, description="Not allowed")}
NOT_FOUND = {404: OpenApiResponse(ErrorOut, description="No evaluation run with this id")}


class RunSummaryOut(serializers.Serializer):
    instances = serializers.IntegerField()
    done = serializers.IntegerField()
    resolved = serializers.IntegerField()
    outcomes = serializers.DictField(child=serializers.IntegerField())
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=6)
    tokens = serializers.IntegerField()
    resolve_rate = serializers.FloatField(allow_null=True)
    cost_per_instance = serializers.DecimalField(max_digits=14, decimal_places=6, allow_null=True)
    cost_per_resolved = serializers.DecimalField(max_digits=14, decimal_places=6, allow_null=True)
    median_seconds = serializers.FloatField(allow_null=True)
    p90_seconds = serializers.FloatField(allow_null=True)
    progress = serializers.SerializerMethodField()

    def get_progress(self, summary) -> str:
        return summary.progress()


class EvalRunOut(serializers.ModelSerializer):
    summary = serializers.SerializerMethodField()

    class Meta:
        model = EvalRun
        fields = [
            "id", "name", "batch", "status", "workflow_source", "workflow_fingerprint", "instances_source", "instances_digest",
            "input_errors", "test_runner", "test_timeout", "concurrency", "created_at", "finished_at", "summary",
        ]

    @extend_schema_field(RunSummaryOut)
    def get_summary(self, run: EvalRun) -> dict:
        return RunSummaryOut(selectors.run_summary(run)).data


class EvalResultOut(serializers.ModelSerializer):
    class Meta:
        model = EvalResult
        fields = [
            "id", "instance_id", "status", "outcome", "reason", "task", "input_tokens", "output_tokens", "cache_read_tokens",
            "cache_write_tokens", "cost_usd", "wall_seconds", "grading_seconds", "attempts", "rounds", "tests", "started_at", "finished_at",
        ]


class EvalRunDetailOut(EvalRunOut):
    results = serializers.SerializerMethodField()
    workflow_text = serializers.CharField()

    class Meta(EvalRunOut.Meta):
        fields = [*EvalRunOut.Meta.fields, "workflow_text", "results"]

    @extend_schema_field(EvalResultOut(many=True))
    def get_results(self, run: EvalRun) -> list[dict]:
        return EvalResultOut(run.results.order_by("position").defer("diff", "instance"), many=True).data


def _run(run_id: int) -> EvalRun:
    run = EvalRun.objects.filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"No evaluation run {run_id}.")
    return run


class EvalRunListApi(APIView):
    @extend_schema(operation_id="evaluations_list", responses={200: EvalRunOut(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        return Response(EvalRunOut(EvalRun.objects.all()[:100], many=True).data)


class EvalRunDetailApi(APIView):
    @extend_schema(operation_id="evaluations_detail", responses={200: EvalRunDetailOut, **ERRORS, **NOT_FOUND})
    def get(self, request: Request, run_id: int) -> Response:
        return Response(EvalRunDetailOut(_run(run_id)).data)


class EvalRunExportApi(APIView):
    @extend_schema(
        operation_id="evaluations_export",
        responses={200: OpenApiResponse(description="One JSON object per line (application/x-ndjson)"), **ERRORS, **NOT_FOUND},
    )
    def get(self, request: Request, run_id: int) -> HttpResponse:
        run = _run(run_id)
        response = HttpResponse("".join(line + "\n" for line in selectors.export_lines(run)), content_type="application/x-ndjson")
        response["Content-Disposition"] = f'attachment; filename="eval-run-{run.pk}.jsonl"'
        return response
