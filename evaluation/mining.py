"""Mining a repository's own history into evaluation instances (SWE-bench's recipe).

A candidate is a commit reachable from `rev` since a date whose message closes an issue
("Fixes #12", "Closes #3", "Resolves #7"; a merge commit counts against its first parent) and
that changes both test files and other files. Its parent is the ``base_commit``; the diff of the
test files is ``test_patch``, the diff of the rest the reference ``patch``. The tests of the
test files the test_patch touches are run at the base with the test_patch (`before`) and again
with the reference patch too (`after`), in a testbed (`evaluation.testbed`: the sandbox, the
workflow's setup hook, a per-test time limit):

- ``FAIL_TO_PASS``: tests that pass after and fail (or are missing, or time out) before;
- ``PASS_TO_PASS``: tests that pass both times.

A candidate without a FAIL_TO_PASS test is dropped with the reason (e.g. tests that fail before
and after the fix on this interpreter). So is one whose patches do not apply or whose setup fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pipeline import git
from pipeline.workflow import Workflow

from . import testlog
from .instances import Instance
from .testbed import DEFAULT_TEST_TIMEOUT, Testbed, TestbedError

CLOSES = re.compile(r"\b(?:fix(?:e[sd])?|close[sd]?|resolve[sd]?)\s*:?\s+#(\d+)\b", re.IGNORECASE)
_TEST_DIRS = frozenset({"test", "tests", "testing", "e2e"})


def is_test_path(path: str) -> bool:
    """Whether a changed path belongs to the test_patch: under a test directory, or a test
    module (``test_*.py``, ``*_test.py``, ``conftest.py``)."""
    p = PurePosixPath(path)
    if any(part.lower() in _TEST_DIRS for part in p.parts[:-1]):
        return True
    name = p.name.lower()
    return name.startswith("test_") or name.endswith(("_test.py", "_tests.py")) or name == "conftest.py"


def is_test_module(path: str) -> bool:
    """A file pytest collects by its default rules."""
    name = PurePosixPath(path).name
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


@dataclass
class Candidate:
    commit: str
    base: str
    issues: list[int]
    subject: str
    body: str
    date: str
    test_files: list[str]
    code_files: list[str]
    pull: int = 0  # the merged pull request, when mined from GitHub


@dataclass
class Drop:
    commit: str
    reason: str
    issues: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"commit": self.commit, "issues": self.issues, "reason": self.reason}


def _pathspec(paths: list[str]) -> list[str]:
    return [f":(literal){p}" for p in paths]


def candidates(repo: Path, *, rev: str = "HEAD", since: str = "") -> Iterator[Candidate | Drop]:
    """Commits of `rev` (newest first) that close an issue, each as a `Candidate`, or a `Drop`
    when it closes an issue but does not change both tests and code."""
    args = ["log", "--format=%H%x00%P%x00%aI%x00%B%x1e", "--no-color"]
    if since:
        args.append(f"--since={since}")
    out = git.run([*args, rev, "--"], cwd=repo, timeout=600)
    for record in out.split("\x1e"):
        record = record.strip("\n")
        if not record:
            continue
        commit, parents, date, message = (record.split("\x00", 3) + ["", "", ""])[:4]
        issues = [int(n) for n in dict.fromkeys(CLOSES.findall(message))]
        if not issues:
            continue
        parent_list = parents.split()
        if not parent_list:
            yield Drop(commit, "the first commit has no parent to start from", issues)
            continue
        subject, _, body = message.strip().partition("\n")
        yield split_change(repo, commit, parent_list[0], issues, subject=subject.strip(), body=body.strip(), date=date)


def split_change(repo: Path, commit: str, base: str, issues: list[int], *, subject: str, body: str, date: str, pull: int = 0) -> Candidate | Drop:
    """The change from `base` to `commit` as a `Candidate` (its test files and its code files),
    or a `Drop` when it does not change both."""
    changed = [p for p in git.run(["diff", "--no-renames", "--name-only", "-z", base, commit], cwd=repo).split("\x00") if p]
    tests = [p for p in changed if is_test_path(p)]
    code = [p for p in changed if not is_test_path(p)]
    if not tests or not code:
        return Drop(commit, "changes " + ("no test file" if not tests else "only test files"), issues)
    return Candidate(commit, base, issues, subject, body, date, tests, code, pull)


def problem_statement(candidate: Candidate, issue_texts: dict[int, dict] | None = None) -> str:
    """The issue's own text when given (``--issues``), else the commit message without the
    lines that close the issue (a local repository has no tracker to ask)."""
    for number in candidate.issues:
        text = (issue_texts or {}).get(number)
        if text:
            return f"{text.get('title', '').strip()}\n\n{text.get('body', '').strip()}".strip()
    lines = [candidate.subject, "", *candidate.body.splitlines()]
    kept = [line for line in lines if not (CLOSES.search(line) and len(CLOSES.sub("", line).strip(" .,;:-")) == 0)]
    return "\n".join(kept).strip() or candidate.subject


def patch_between(repo: Path, base: str, commit: str, paths: list[str]) -> str:
    out = git.run(["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--binary", "--full-index", base, commit, "--", *_pathspec(paths)], cwd=repo)
    return out + "\n" if out and not out.endswith("\n") else out


def mine_one(
    repo: Path,
    candidate: Candidate,
    *,
    workflow: Workflow,
    runner: list[str],
    test_timeout: float = DEFAULT_TEST_TIMEOUT,
    repo_name: str,
    instance_id: str,
    issue_texts: dict[int, dict] | None = None,
) -> Instance | Drop:
    """Run the candidate's tests before and after its fix; an `Instance` when some test flips."""
    test_patch = patch_between(repo, candidate.base, candidate.commit, candidate.test_files)
    patch = patch_between(repo, candidate.base, candidate.commit, candidate.code_files)
    modules = [p for p in candidate.test_files if is_test_module(p)]

    def drop(reason: str) -> Drop:
        return Drop(candidate.commit, reason, candidate.issues)

    if not modules:
        return drop(f"its test changes ({', '.join(candidate.test_files[:3])}) touch no test module pytest collects (test_*.py, *_test.py)")
    runs = {}
    ids: list[str] = []
    try:
        for side in ("after", "before"):
            with Testbed(repo=repo, commit=candidate.base, workflow=workflow, runner=runner, test_timeout=test_timeout, label=instance_id) as bed:
                bed.apply(test_patch, what="the test_patch")
                if side == "after":
                    bed.apply(patch, what="the reference patch")
                present = [m for m in modules if (bed.path / m).is_file()]
                bed.setup()
                if side == "after":
                    ids = bed.collect(present)
                    if not ids:
                        return drop(f"no test is collected from {', '.join(present) or 'its test modules'} after the fix")
                runs[side] = bed.run_tests(ids, files=present)
    except TestbedError as exc:
        return drop(str(exc))
    before, after = runs["before"].statuses, runs["after"].statuses
    fail_to_pass = [t for t in ids if testlog.passed(after, t) and testlog.failed(before, t)]
    pass_to_pass = [t for t in ids if testlog.passed(after, t) and testlog.passed(before, t)]
    if not fail_to_pass:
        both = [t for t in ids if testlog.failed(after, t) and testlog.failed(before, t)]
        if both:
            shown = ", ".join(both[:3]) + (f" and {len(both) - 3} more" if len(both) > 3 else "")
            return drop(f"no test flips: {len(both)} test(s) fail both before and after the fix on this interpreter ({shown})")
        return drop(f"no test flips: of {len(ids)} test(s), none fails before the fix and passes after it")
    return Instance(
        instance_id=instance_id,
        repo=repo_name,
        base_commit=candidate.base,
        problem_statement=problem_statement(candidate, issue_texts),
        test_patch=test_patch,
        FAIL_TO_PASS=tuple(fail_to_pass),
        PASS_TO_PASS=tuple(pass_to_pass),
        patch=patch,
        extra={"created_at": candidate.date, "commit": candidate.commit, "issue_numbers": candidate.issues, **({"pull_number": candidate.pull} if candidate.pull else {})},
    )


def mine(
    repo: Path,
    *,
    workflow: Workflow,
    runner: list[str],
    since: str = "",
    limit: int = 10,
    rev: str = "HEAD",
    test_timeout: float = DEFAULT_TEST_TIMEOUT,
    issue_texts: dict[int, dict] | Callable[[list[int]], dict[int, dict]] | None = None,
    on_result: Callable[[Instance | Drop], None] | None = None,
    found_in: Iterable[Candidate | Drop] | None = None,
    repo_name: str = "",
) -> tuple[list[Instance], list[Drop]]:
    """Up to `limit` instances from `repo`'s history, newest first, and every candidate dropped
    on the way with its reason. `found_in` replaces the history's candidates (a forge's merged
    pull requests, `evaluation.forge_mining`); `issue_texts` may be a function that fetches the
    texts of a candidate's issues."""
    repo = Path(repo).resolve()
    parts = repo_name.split("/") if repo_name else [repo.name]
    name = "__".join(git.slugify(p, max_length=60) for p in parts) or "repo"
    kept: list[Instance] = []
    dropped: list[Drop] = []
    used: set[str] = set()
    for found in found_in if found_in is not None else candidates(repo, rev=rev, since=since):
        if len(kept) >= limit:
            break
        if isinstance(found, Drop):
            dropped.append(found)
            if on_result:
                on_result(found)
            continue
        # SWE-bench names a GitHub instance owner__name-PR; a local one is named by its issue.
        instance_id = f"{name}-{found.pull or found.issues[0]}"
        if instance_id in used:
            instance_id = f"{instance_id}-{found.commit[:7]}"
        texts = issue_texts(found.issues) if callable(issue_texts) else issue_texts
        result = mine_one(
            repo, found, workflow=workflow, runner=runner, test_timeout=test_timeout, repo_name=repo_name or str(repo), instance_id=instance_id, issue_texts=texts
        )
        if isinstance(result, Instance):
            used.add(instance_id)
            kept.append(result)
        else:
            dropped.append(result)
        if on_result:
            on_result(result)
    return kept, dropped
