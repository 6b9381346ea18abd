"""A repository's memory on the dashboard (README "A memory that carries over"): the list of
repositories, one repository's entries with what the next prompt is given, and the edits a
person with the memory permissions makes (add, edit, accept, reject, delete)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from pipeline import services
from pipeline.models import MemoryEntry, Repository

from . import selectors
from .access import page_view


class MemoryTextForm(forms.Form):
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=10_000,
        help_text="One short line: how to build or test the repository, a quirk of its tests, a convention.",
    )

    def clean_text(self) -> str:
        try:
            return services.memory_text_clean(self.cleaned_data["text"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class MemoryFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "any status"), *MemoryEntry.Status.choices], required=False)


@page_view("pipeline.view_memoryentry", require_GET)
def memory_index(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/memory.html", {"repositories": selectors.memory_repositories()})


def _repository_memory(request: HttpRequest, repository: Repository, add_form: MemoryTextForm | None = None) -> dict:
    form = MemoryFilterForm(request.GET)
    status = form.cleaned_data.get("status") if form.is_valid() else ""
    given, left_out = services.memory_in_prompts(repository=repository)
    return {
        "repository": repository,
        "entries": selectors.memory_list(repository=repository, status=status or None),
        "form": form,
        "add_form": add_form or MemoryTextForm(),
        "given": {e.pk for e in given},
        "given_chars": sum(len(e.text) for e in given),
        "left_out": left_out,
        "limits": services.memory_limits(),
    }


@page_view("pipeline.view_memoryentry", require_GET)
def repository_memory(request: HttpRequest, repository_id: int) -> HttpResponse:
    repository = get_object_or_404(Repository, pk=repository_id)
    return render(request, "dashboard/repository_memory.html", _repository_memory(request, repository))


@page_view("pipeline.add_memoryentry", require_POST)
def memory_add(request: HttpRequest, repository_id: int) -> HttpResponse:
    repository = get_object_or_404(Repository, pk=repository_id)
    form = MemoryTextForm(request.POST)
    if not form.is_valid():
        return render(request, "dashboard/repository_memory.html", _repository_memory(request, repository, form), status=400)
    entry = services.memory_add(repository=repository, text=form.cleaned_data["text"], by=request.user.get_username())
    messages.success(request, f"Entry #{entry.pk} added and accepted.")
    return redirect("dashboard:repository-memory", repository_id=repository.pk)


@page_view("pipeline.change_memoryentry")
def memory_edit(request: HttpRequest, entry_id: int) -> HttpResponse:
    entry = selectors.memory_get(entry_id)
    form = MemoryTextForm(request.POST or None, initial={"text": entry.text})
    if request.method == "POST" and form.is_valid():
        services.memory_edit(entry=entry, text=form.cleaned_data["text"], by=request.user.get_username())
        messages.success(request, f"Entry #{entry.pk} saved.")
        return redirect("dashboard:repository-memory", repository_id=entry.repository_id)
    return render(request, "dashboard/memory_edit.html", {"entry": entry, "form": form}, status=400 if form.errors else 200)


def _decide(request: HttpRequest, entry_id: int, decide, said: str) -> HttpResponse:
    """Accept or reject an entry (`decide` is the service) and go back to its repository's memory."""
    entry = decide(entry=selectors.memory_get(entry_id), by=request.user.get_username())
    messages.success(request, f"Entry #{entry.pk} {said.format(repository=entry.repository.full_name)}")
    return redirect("dashboard:repository-memory", repository_id=entry.repository_id)


@page_view("pipeline.change_memoryentry", require_POST)
def memory_accept(request: HttpRequest, entry_id: int) -> HttpResponse:
    return _decide(request, entry_id, services.memory_accept, "accepted: later tasks of {repository} get it.")


@page_view("pipeline.change_memoryentry", require_POST)
def memory_reject(request: HttpRequest, entry_id: int) -> HttpResponse:
    return _decide(request, entry_id, services.memory_reject, "rejected.")


@page_view("pipeline.delete_memoryentry", require_POST)
def memory_delete(request: HttpRequest, entry_id: int) -> HttpResponse:
    entry = selectors.memory_get(entry_id)
    repository_id, number = entry.repository_id, entry.pk
    services.memory_delete(entry=entry)
    messages.success(request, f"Entry #{number} deleted.")
    return redirect("dashboard:repository-memory", repository_id=repository_id)
