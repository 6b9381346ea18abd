"""Repositories from the UI: the list, registering a local or a GitHub repository (what
`manage.py add_repo` does, with its checks), and choosing or editing the workflow its tasks use
(the validator's errors shown at the field, nothing saved until it is valid).

Permissions (model permissions, README "Roles"): seeing the list `view_repository`; registering
`add_repository` (a path on the server, or a repository TAC-X will push to); the workflow
`change_repository` (it names the agents and commands every later task of it runs)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from pipeline import git, repos, services
from pipeline.models import Repository
from pipeline.workflow import DEFAULT_WORKFLOW_FILE, WORKFLOW_PATH, WorkflowError

from .access import page_view

LOCAL_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"


class LocalRepositoryForm(forms.Form):
    name = forms.RegexField(
        regex=rf"^{LOCAL_NAME}$",
        max_length=100,
        help_text="Shown on the dashboard and used by the API: letters, digits, '.', '_' and '-'.",
        error_messages={"invalid": "Use letters, digits, '.', '_' and '-' (starting with a letter or digit)."},
    )
    path = forms.CharField(
        max_length=1000, help_text="Absolute path of a git repository on the TAC-X machine (working copy or bare)."
    )
    default_branch = forms.CharField(max_length=250, initial="main", help_text="The branch tasks start from.")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if Repository.objects.filter(kind=Repository.Kind.LOCAL, full_name=name).exists():
            raise forms.ValidationError(f"A local repository named {name!r} is already registered.")
        return name

    def clean_path(self) -> str:
        try:
            return str(repos.local_git_repository(self.cleaned_data["path"]))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class GitHubRepositoryForm(forms.Form):
    full_name = forms.CharField(max_length=200, label="OWNER/NAME", help_text="The repository on GitHub, e.g. octo/sample.")
    trigger_label = forms.CharField(max_length=100, initial="rpi-auto", help_text="Issues with this label become tasks.")
    max_concurrent_tasks = forms.IntegerField(min_value=1, max_value=1000, initial=2, help_text="Tasks that may run at once.")
    default_branch = forms.CharField(max_length=200, initial="main", help_text="Base branch of the pull requests.")
    clone_url = forms.CharField(
        max_length=1000,
        required=False,
        help_text="Optional: where to clone from and push to (default https://github.com/OWNER/NAME.git).",
    )

    def clean_full_name(self) -> str:
        name = self.cleaned_data["full_name"].strip()
        if not repos.GITHUB_FULL_NAME.match(name):
            raise forms.ValidationError(f"{name!r} is not OWNER/NAME.")
        if Repository.objects.filter(kind=Repository.Kind.GITHUB, full_name=name).exists():
            raise forms.ValidationError(f"{name} is already registered.")
        return name

    def clean_clone_url(self) -> str:
        url = self.cleaned_data.get("clone_url", "").strip()
        if url and not url.startswith(("https://", "http://", "ssh://", "git@", "/")):
            raise forms.ValidationError("Use an https://, ssh:// or git@ URL (or an absolute path).")
        return url


@page_view("pipeline.view_repository")
def repository_list(request: HttpRequest) -> HttpResponse:
    rows = Repository.objects.order_by("kind", "full_name")
    return render(request, "dashboard/repositories.html", {"repositories": rows})


@page_view("pipeline.add_repository")
def repository_new(request: HttpRequest) -> HttpResponse:
    """Register a repository: a git repository on this machine (`add_repo NAME --local PATH`) or
    one on GitHub (`add_repo OWNER/NAME`). A path the server can read becomes one TAC-X pushes
    to: only `pipeline.add_repository`."""
    github = request.method == "POST" and request.POST.get("kind") == "github"
    local_form = LocalRepositoryForm(request.POST if request.method == "POST" and not github else None)
    github_form = GitHubRepositoryForm(request.POST if github else None)
    if request.method == "POST" and not github and local_form.is_valid():
        data = local_form.cleaned_data
        repository, _ = services.repository_add(
            full_name=data["name"], kind=Repository.Kind.LOCAL, local_path=data["path"], default_branch=data["default_branch"]
        )
        messages.success(request, f"Registered {repository.full_name} ({repository.local_path}).")
        return redirect(f"{reverse('dashboard:task-new')}?repository={repository.pk}")
    if github and github_form.is_valid():
        data = github_form.cleaned_data
        repository, _ = services.repository_add(
            full_name=data["full_name"],
            kind=Repository.Kind.GITHUB,
            clone_url=data["clone_url"],
            default_branch=data["default_branch"],
            trigger_label=data["trigger_label"],
            max_concurrent_tasks=data["max_concurrent_tasks"],
        )
        messages.success(
            request,
            f"Registered {repository.full_name}: issues labelled {repository.trigger_label!r} become tasks "
            "(the GitHub App or token must reach it; see the README's GitHub steps).",
        )
        return redirect("dashboard:repositories")
    context = {"form": local_form, "github_form": github_form, "kind": "github" if github else "local"}
    return render(
        request, "dashboard/repository_new.html", context, status=400 if local_form.errors or github_form.errors else 200
    )


class WorkflowForm(forms.Form):
    use = forms.ChoiceField(
        choices=[
            ("repository", f"The repository's {WORKFLOW_PATH} (the bundled default where it has none)"),
            ("tacx", "This workflow, kept in TAC-X"),
        ],
        widget=forms.RadioSelect,
    )
    workflow = forms.CharField(
        required=False, max_length=100_000, widget=forms.Textarea(attrs={"rows": 24, "spellcheck": "false", "class": "code"})
    )


@page_view("pipeline.change_repository")
def repository_workflow(request: HttpRequest, repository_id: int) -> HttpResponse:
    """Pick which workflow the repository's tasks use, or edit the one kept in TAC-X."""
    repository = get_object_or_404(Repository, pk=repository_id)
    try:
        file_text, file_error = repos.workflow_file_text(repository), ""
    except git.GitError as exc:
        file_text, file_error = None, str(exc)
    start = request.GET.get("start")
    if start == "default":
        text = DEFAULT_WORKFLOW_FILE.read_text(encoding="utf-8")
    elif start == "file" and file_text is not None:
        text = file_text
    else:
        text = repository.workflow_text or file_text or DEFAULT_WORKFLOW_FILE.read_text(encoding="utf-8")
    initial = {"use": "tacx" if repository.workflow_text or start else "repository", "workflow": text}
    form = WorkflowForm(request.POST or None, initial=initial)
    status = 200
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        chosen = data["workflow"] if data["use"] == "tacx" else ""
        if data["use"] == "tacx" and not chosen.strip():
            form.add_error("workflow", "Write the workflow (or load the default), or choose the repository's file.")
        else:
            try:
                services.repository_workflow_set(repository=repository, text=chosen)
            except WorkflowError as exc:
                form.add_error("workflow", exc.errors)
            else:
                which = "the workflow kept in TAC-X" if chosen else f"the repository's {WORKFLOW_PATH}"
                messages.success(request, f"{repository.full_name}: new tasks use {which}.")
                return redirect("dashboard:repository-workflow", repository_id=repository.pk)
    if form.errors:
        status = 400
    context = {
        "repository": repository,
        "form": form,
        "file_text": file_text,
        "file_error": file_error,
        "workflow_path": WORKFLOW_PATH,
    }
    return render(request, "dashboard/repository_workflow.html", context, status=status)
