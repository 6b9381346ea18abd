"""The evaluation page: runs side by side on the same instances (which instance each resolved,
resolve rate against $ per instance), with live progress while a run is going."""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from evaluation import selectors
from evaluation.models import EvalRun

from .access import page_view

# The scatter plot's drawing area (SVG user units) and margins.
WIDTH, HEIGHT, LEFT, BOTTOM, TOP, RIGHT = 480, 260, 50, 30, 10, 20


class CompareForm(forms.Form):
    runs = forms.CharField(required=False, max_length=500, help_text="Run ids, comma separated")

    def clean_runs(self) -> list[int]:
        raw = self.cleaned_data["runs"].replace(" ", "")
        if not raw:
            return []
        try:
            ids = [int(x) for x in raw.split(",") if x]
        except ValueError:
            raise forms.ValidationError("runs: give run ids separated by commas, e.g. 3,4") from None
        return ids[:10]


def scatter(points: list[dict]) -> list[dict]:
    """Each run's point in the plot: x = $ per instance, y = resolve rate (0..1)."""
    plotted = [p for p in points if p["cost"] is not None and p["rate"] is not None]
    top = max((p["cost"] for p in plotted), default=0) or 1.0
    width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    for p in plotted:
        p["x"] = round(LEFT + p["cost"] / (top * 1.1) * width, 1)
        p["y"] = round(TOP + (1 - p["rate"]) * height, 1)
    return plotted


@page_view("pipeline.view_task", require_GET)
def eval_compare(request: HttpRequest) -> HttpResponse:
    form = CompareForm(request.GET)
    ids = form.cleaned_data["runs"] if form.is_valid() else []
    recent = list(EvalRun.objects.all()[:30])
    if ids:
        runs = list(EvalRun.objects.filter(pk__in=ids).order_by("id"))
    elif recent:
        # The latest batch: the workflows one eval_run compared.
        runs = list(EvalRun.objects.filter(batch=recent[0].batch).order_by("id")) if recent[0].batch else recent[:1]
    else:
        runs = []
    summaries = [selectors.run_summary(run) for run in runs]
    instance_ids, cells = selectors.runs_compared(runs)
    rows = [{"instance_id": i, "cells": [cells.get((run.pk, i)) for run in runs]} for i in instance_ids]
    points = [
        {"run": run, "cost": float(s.cost_per_instance) if s.cost_per_instance is not None else None, "rate": s.resolve_rate}
        for run, s in zip(runs, summaries, strict=True)
    ]
    context = {
        "form": form,
        "runs": list(zip(runs, summaries, strict=True)),
        "recent": recent,
        "rows": rows,
        "points": scatter(points),
        "plot": {"width": WIDTH, "height": HEIGHT, "left": LEFT, "bottom": HEIGHT - BOTTOM, "top": TOP, "right": WIDTH - RIGHT,
                 "max_cost": max((p["cost"] for p in points if p["cost"] is not None), default=0) * 1.1},
        "running": any(run.status == EvalRun.Status.RUNNING for run in runs),
        "same_instances": len({run.instances_digest for run in runs}) <= 1,
    }
    return render(request, "dashboard/evaluations.html", context)
