"""A testbed: one commit of a repository checked out into a fresh directory, patches applied, the
workflow's `setup` hook run, and tests run by id, all of the repository's code inside the agent
sandbox TAC-X uses for hooks and the test command (`pipeline.sandbox`, with the hooks' scrubbed
environment and `setup_env` secrets from `pipeline.hooks`).

The miner uses it at a fix's parent (with and without the reference fix); grading uses it at the
agent's head. Test ids reach the runner as argv items, never through a shell: an id such as
``tests/t.py::test_x[ASC NULLS FIRST]`` is one argument. Tests first run together under a limit of
`test_timeout` per test; if that run does not finish, each test runs alone under `test_timeout`,
so one test that loops forever is reported as ``TIMEOUT`` and the others still get a verdict.

What runs here is written by strangers (the repository's tests, and the agent's code when
grading): TAC-X only runs git on the directory with its safe configuration (`pipeline.git`),
reads the runner's output as text, and removes the directory afterwards.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from pipeline import git, hooks, sandbox
from pipeline.agent_process import group_alive, kill_group
from pipeline.lib.redaction import redact
from pipeline.workflow import HookConfig, Workflow

from . import testlog

DEFAULT_RUNNER = ("python", "-m", "pytest", "-rA", "-p", "no:cacheprovider", "--continue-on-collection-errors")
DEFAULT_TEST_TIMEOUT = 120
OUTPUT_MAX_BYTES = 20_000_000  # what is read of one test run's output
TAIL_CHARS = 8000


class TestbedError(Exception):
    """The testbed could not be made: a commit that does not exist, a patch that does not apply,
    a setup hook that failed. The message says which and why."""

    __test__ = False  # not a pytest test class, whatever pytest's name rules say


def runner_argv(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """The test runner's argv from an option (shell-like words) or a list; the test ids are
    appended to it as arguments."""
    if text is None or text == "":
        return DEFAULT_RUNNER
    argv = tuple(shlex.split(text)) if isinstance(text, str) else tuple(text)
    if not argv:
        raise ValueError("the test runner is empty")
    return argv


@dataclass
class CommandRun:
    status: str  # passed | failed | timed_out | error
    exit_code: int | None
    output: str
    duration: float


def run_argv(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    wrap: Callable[[list[str], dict[str, str]], tuple[list[str], dict[str, str], Path]] | None = None,
    grace: float = 2.0,
) -> CommandRun:
    """Run `argv` (no shell) in its own process group; on `timeout` the whole group is killed."""
    started = time.monotonic()
    argv, cmd_env, cmd_cwd = (wrap(list(argv), dict(env)) if wrap else (list(argv), dict(env), cwd))
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                argv, cwd=str(cmd_cwd), env=cmd_env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError as exc:
            return CommandRun("error", None, f"could not start {argv[0]}: {exc}", 0.0)
        status = ""
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = "timed_out"
            kill_group(proc.pid, grace)
            proc.wait()
        if group_alive(proc.pid):
            kill_group(proc.pid, min(grace, 1.0))
        out.seek(0, os.SEEK_END)
        size = out.tell()
        out.seek(max(0, size - OUTPUT_MAX_BYTES))
        text = out.read().decode("utf-8", errors="replace")
    if not status:
        status = "passed" if proc.returncode == 0 else "failed"
    return CommandRun(status, None if status == "timed_out" else proc.returncode, text, time.monotonic() - started)


@dataclass
class TestRun:
    """The verdict per test id of one testbed run, and how it was reached."""

    statuses: dict[str, str]
    output_tail: str
    one_by_one: bool = False  # the run together did not finish in time
    timed_out: list[str] = field(default_factory=list)

    __test__ = False


class Testbed:
    """A directory holding one commit of `repo` (a git directory TAC-X owns or the user's
    repository, read only through `git`). Use as a context manager; the directory goes away."""

    __test__ = False

    def __init__(self, *, repo: Path, commit: str, workflow: Workflow, runner: Iterable[str] = DEFAULT_RUNNER, test_timeout: float = DEFAULT_TEST_TIMEOUT, label: str = ""):
        self.repo = Path(repo)
        self.commit = commit
        self.workflow = workflow
        self.runner = list(runner)
        self.test_timeout = test_timeout
        self.label = label
        base = Path(settings.VAR_DIR) / "eval" / "testbeds"
        base.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="testbed-", dir=base))
        self.path = self.root / "src"
        self.path.mkdir()
        self._box_root: Path | None = None

    def __enter__(self) -> Testbed:
        try:
            self._check_out()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._box_root is not None:
            shutil.rmtree(self._box_root, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the files ---------------------------------------------------------------------------

    def _check_out(self) -> None:
        if not git.has_commit(self.repo, self.commit):
            raise TestbedError(f"base_commit {self.commit} does not exist in {self.label or self.repo}")
        index = self.root / "index"
        outside = ["--git-dir", str(git.common_dir(self.repo)), "--work-tree", str(self.path)]
        # A private index: the repository's own index (and its other users) are left alone.
        git.run([*outside, "read-tree", self.commit], cwd=self.path, env={"GIT_INDEX_FILE": str(index)})
        git.run([*outside, "checkout-index", "--all", "--force"], cwd=self.path, env={"GIT_INDEX_FILE": str(index)}, timeout=900)
        index.unlink(missing_ok=True)
        # Its own repository: `git apply` works relative to it (not to a repository around it),
        # and a setup hook that asks git (setuptools-scm, …) finds one commit.
        git.run(["init", "--quiet"], cwd=self.path)
        self.commit_all("testbed")

    def commit_all(self, message: str) -> None:
        git.run(["add", "--all", "--force"], cwd=self.path, timeout=900)
        git.run(["commit", "--quiet", "--allow-empty", "--no-verify", "-m", message], cwd=self.path)

    def patch_paths(self, patch: str) -> list[str]:
        """The paths a patch touches (both sides of a rename)."""
        out = git.run(["apply", "--numstat", "-z", "-"], cwd=self.path, input=_patch_text(patch), check=False)
        paths: list[str] = []
        parts = out.split("\x00")
        i = 0
        while i < len(parts):
            fields = parts[i].split("\t")
            if len(fields) == 3 and fields[2]:
                paths.append(fields[2])
                i += 1
            elif len(fields) == 3:  # a rename: "added\tdeleted\t" then old, new
                paths += [p for p in parts[i + 1 : i + 3] if p]
                i += 3
            else:
                i += 1
        return paths

    def apply(self, patch: str, *, what: str) -> None:
        """Apply `patch` to the files; `TestbedError` naming `what` and git's reason otherwise."""
        if not patch.strip():
            return
        try:
            git.run(["apply", "--whitespace=nowarn", "-"], cwd=self.path, input=_patch_text(patch))
        except git.GitError as exc:
            raise TestbedError(f"{what} does not apply at {self.commit[:12]}: {str(exc).split(': ', 2)[-1]}") from None

    def restore(self, paths: Iterable[str], *, commit: str) -> None:
        """Put `paths` back as they are at `commit` of the repository (gone if absent there):
        what grading does to the test files before it applies the instance's test_patch."""
        for rel in paths:
            target = self.path / rel
            blob = git.read_blob(self.repo, f"{commit}:{rel}", max_bytes=50_000_000)
            if target.is_symlink() or target.exists():
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            if blob is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob)

    # -- running -----------------------------------------------------------------------------

    def _wrap(self, allow: Iterable[str]):
        """The sandbox wrapper for commands in this testbed (None with the sandbox off)."""
        if not sandbox.enabled():
            return None, []
        if self._box_root is None:
            self._box_root = sandbox.new_root()
            (self._box_root / "home" / "tmp").mkdir(parents=True)
        root, home = self._box_root, self._box_root / "home"
        boxes: list[sandbox.Box] = []

        def wrap(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str], Path]:
            box = sandbox.prepare(
                argv=argv,
                env={**env, "HOME": str(home), "TMPDIR": str(home / "tmp")},
                worktree=self.path,
                git_access=None,
                allow_hosts=list(allow),
                home=home,
                root=root,
                extra_write=settings.TACX.get("SANDBOX_HOOK_WRITE", []),
            )
            boxes.append(box)
            return box.argv, box.env, box.cwd

        return wrap, boxes

    def _env(self, name: str) -> dict[str, str]:
        env = hooks.hook_environment(name, workflow=self.workflow, worktree=self.path, context={"eval_instance": self.label})
        env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        env.setdefault("COLUMNS", "250")  # pytest's summary lines are not cut at 80
        return env

    def setup(self) -> hooks.HookRun | None:
        """The workflow's setup hook, as for a task's fresh worktree; `TestbedError` if it fails.
        What it made is committed here (never seen as a change by a later diff)."""
        hook = self.workflow.hook("setup")
        if hook is None:
            return None
        wrap, boxes = self._wrap(hook.network_allow)
        env = self._env("setup")
        try:
            run = hooks.run_hook(
                hook, cwd=self.path, env=env, grace=settings.TACX["KILL_GRACE_SECONDS"], wrap=wrap,
                secret_values=hooks.secret_values("setup", workflow=self.workflow, env=env),
            )
        finally:
            for box in boxes:
                box.finish()
        if not run.ok:
            raise TestbedError(f"setup hook {run.status}: " + "\n".join(run.output.strip().splitlines()[-20:]))
        return run

    def _run(self, args: list[str], timeout: float) -> CommandRun:
        test_hook = self.workflow.test_command
        allow = test_hook.network_allow if isinstance(test_hook, HookConfig) else ()
        wrap, boxes = self._wrap(allow)
        env = self._env("test_command")
        try:
            run = run_argv([*self.runner, *args], cwd=self.path, env=env, timeout=timeout, wrap=wrap, grace=settings.TACX["KILL_GRACE_SECONDS"])
        finally:
            for box in boxes:
                box.finish()
        secrets = hooks.secret_values("test_command", workflow=self.workflow, env=env)
        output = run.output
        for value in sorted(secrets, key=len, reverse=True):
            output = output.replace(value, "[REDACTED]")
        run.output = redact(output)
        return run

    def collect(self, targets: list[str]) -> list[str]:
        """The test ids pytest collects from `targets` (files), in order; [] when collection fails."""
        run = self._run([*targets, "--collect-only", "-q"], timeout=max(self.test_timeout, 60))
        return testlog.collected_ids(run.output) if run.status in ("passed", "failed") else []

    def run_tests(self, ids: list[str], *, files: list[str] = ()) -> TestRun:
        """The verdict of each test in `ids` (with `files`, also whatever those files report,
        e.g. a file that cannot be collected). Together first; one by one when together takes
        longer than `test_timeout` per test."""
        targets = list(dict.fromkeys([*ids, *files]))
        if not targets:
            return TestRun({}, "")
        together = self._run(targets, timeout=self.test_timeout * max(1, len(ids)))
        if together.status != "timed_out":
            return TestRun(testlog.parse_pytest(together.output, known=ids), together.output[-TAIL_CHARS:])
        statuses: dict[str, str] = {}
        timed_out: list[str] = []
        tails = [f"(the tests together ran past {self.test_timeout * max(1, len(ids)):.0f} s; each ran alone)"]
        for test_id in ids:
            alone = self._run([test_id], timeout=self.test_timeout)
            if alone.status == "timed_out":
                statuses[test_id] = testlog.TIMEOUT
                timed_out.append(test_id)
                tails.append(f"{test_id}: timed out after {self.test_timeout:.0f} s")
                continue
            verdict = testlog.parse_pytest(alone.output, known=[test_id])
            statuses[test_id] = verdict.get(test_id) or (testlog.ERROR if alone.status == "failed" else testlog.PASSED if alone.status == "passed" else testlog.ERROR)
            tails.append(f"{test_id}: {statuses[test_id]}")
        return TestRun(statuses, "\n".join(tails)[-TAIL_CHARS:], one_by_one=True, timed_out=timed_out)


def _patch_text(patch: str) -> str:
    return patch if patch.endswith("\n") else patch + "\n"
