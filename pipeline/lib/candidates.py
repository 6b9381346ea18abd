"""Best of N (issue 25): the workflow's `candidates:` and `select:` values of a stage, parsed and
explained, and the names a candidate gets (its branch, its worktree). Pure: no database, no git.

`candidates: 3` runs three candidates of the stage's own provider and model; a list runs one per
entry, each `{provider, model, prompt_variant}` (the provider defaults to the stage's; a model
given for another provider is that provider's). `select:` is the order of the rules that choose
one: `tests` (the repository's `test_command` passes), `judge` (the reviewing stage's provider
compares the passing candidates' diffs), `smallest_diff` (fewest changed lines); the smallest
diff, then the lowest candidate number, always breaks what is left of a tie.

Branches: the task's branch is `tacx/<issue>-<slug>`, so git cannot also hold
`tacx/<issue>-<slug>/c<k>` (a ref cannot be a file and a directory at once: the D/F conflict).
Candidates live under their own prefix instead, `tacx-candidates/<issue>-<slug>/c<k>`, which no
task branch can collide with, and are removed when the task ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_CANDIDATES = 8
MAX_VARIANT_CHARS = 4000
SELECT_RULES = ("tests", "judge", "smallest_diff")
DEFAULT_SELECT = SELECT_RULES
CANDIDATE_KEYS = ("provider", "model", "prompt_variant", "options")
BRANCH_PREFIX = "tacx-candidates/"
# The round kinds a workflow may give candidates to (pipeline.models.Round.Kind's values).
ROUND_KINDS = ("review", "comment", "ci_fix")
# Stages that may run candidates: the one whose change the tests and the judge compare.
CANDIDATE_STAGES = ("building",)


@dataclass(frozen=True)
class CandidateSpec:
    provider: str
    model: str = ""
    prompt_variant: str = ""
    # The provider's own settings (a codex candidate's base_url); None: the stage's, when the
    # provider is the stage's, else none.
    options: dict | None = None

    def to_json(self) -> dict:
        data = {"provider": self.provider, "model": self.model, "prompt_variant": self.prompt_variant}
        if self.options is not None:
            data["options"] = dict(self.options)
        return data

    def label(self) -> str:
        return f"{self.provider}/{self.model}" if self.model else self.provider


def parse_candidates(
    raw: Any, *, where: str, provider: str, model: str, providers: tuple[str, ...]
) -> tuple[tuple[CandidateSpec, ...], list[str]]:
    """`candidates:` of a stage whose own provider and model are given: the specs (empty for one
    candidate, the ordinary single run) and the problems found, each "where: problem"."""
    if raw is None:
        return (), []
    if isinstance(raw, bool) or not isinstance(raw, (int, list)):
        return (), [
            f"{where}: must be a number of candidates (1 to {MAX_CANDIDATES}) or a list of {{provider, model, prompt_variant}}, got {type(raw).__name__}"
        ]
    if isinstance(raw, int):
        if not 1 <= raw <= MAX_CANDIDATES:
            return (), [f"{where}: must be between 1 and {MAX_CANDIDATES}, got {raw}"]
        return (tuple(CandidateSpec(provider=provider, model=model) for _ in range(raw)) if raw > 1 else ()), []
    if not 1 <= len(raw) <= MAX_CANDIDATES:
        return (), [f"{where}: a list of 1 to {MAX_CANDIDATES} candidates, got {len(raw)}"]
    specs, problems = [], []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{at}: must be a mapping with any of: {', '.join(CANDIDATE_KEYS)}, got {type(item).__name__}")
            continue
        unknown = sorted(str(k) for k in item if k not in CANDIDATE_KEYS)
        if unknown:
            problems.append(f"{at}.{unknown[0]}: unknown key (allowed: {', '.join(CANDIDATE_KEYS)})")
            continue
        their = item.get("provider", provider)
        if their not in providers or (their == "command" and provider != "command"):
            # A `command` candidate needs the stage's own argv: only under a command stage.
            allowed = ", ".join(p for p in providers if p != "command")
            problems.append(
                f"{at}.provider: unknown or unusable provider {their!r} (a candidate may use: {allowed}; command only in a command stage)"
            )
            continue
        their_model = item.get("model", model if their == provider else "")
        variant = item.get("prompt_variant", "")
        if not isinstance(their_model, str):
            problems.append(f"{at}.model: must be a string, got {type(their_model).__name__}")
            continue
        if not isinstance(variant, str) or len(variant) > MAX_VARIANT_CHARS:
            problems.append(
                f"{at}.prompt_variant: must be a string of at most {MAX_VARIANT_CHARS} characters (added to the stage's prompt)"
            )
            continue
        options = item.get("options")
        if options is not None and not isinstance(options, dict):
            problems.append(f"{at}.options: must be a mapping (the provider's options, as a stage's)")
            continue
        specs.append(CandidateSpec(provider=their, model=their_model, prompt_variant=variant, options=options))
    if problems:
        return (), problems
    return (tuple(specs) if len(specs) > 1 else ()), []


def parse_select(raw: Any, *, where: str) -> tuple[tuple[str, ...], list[str]]:
    """`select:` of a stage: a list (or one name) of SELECT_RULES, no repeats."""
    if raw is None:
        return DEFAULT_SELECT, []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(r, str) for r in raw):
        return DEFAULT_SELECT, [
            f"{where}: must be a non-empty list of rules in the order they apply (from: {', '.join(SELECT_RULES)})"
        ]
    for rule in raw:
        if rule not in SELECT_RULES:
            return DEFAULT_SELECT, [
                f"{where}: unknown rule {rule!r} (known: {', '.join(SELECT_RULES)}; the smallest diff always breaks a tie last)"
            ]
    for rule in raw:
        if raw.count(rule) > 1:
            return DEFAULT_SELECT, [f"{where}: rule {rule!r} appears twice"]
    return tuple(raw), []


def parse_round_candidates(raw: Any, *, where: str) -> tuple[dict[str, int], list[str]]:
    """`round_candidates:` of a stage: how many candidates a PR round of each kind runs (one
    unless given; only a number: a round's candidates are the stage's own provider and model)."""
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [f"{where}: must be a mapping of round kind to a number of candidates (kinds: {', '.join(ROUND_KINDS)})"]
    out: dict[str, int] = {}
    for kind, n in raw.items():
        if kind not in ROUND_KINDS:
            return {}, [f"{where}.{kind}: unknown round kind (known: {', '.join(ROUND_KINDS)})"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CANDIDATES:
            return {}, [f"{where}.{kind}: must be a number of candidates between 1 and {MAX_CANDIDATES}, got {n!r}"]
        out[str(kind)] = n
    return out, []


def candidate_branch(task_branch: str, k: int) -> str:
    """`tacx/12-fix-it` -> `tacx-candidates/12-fix-it/c2` (see the module docstring)."""
    return f"{BRANCH_PREFIX}{task_branch.removeprefix('tacx/')}/c{k}"


def candidate_worktree_name(task_dir_name: str, k: int) -> str:
    return f"{task_dir_name}-c{k}"
