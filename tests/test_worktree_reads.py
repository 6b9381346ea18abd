"""The hand-back gate itself (pipeline/worktree_reads.py), fast and without a task: every kind of
refusal, with both ways of opening (openat2, and the O_NOFOLLOW walk for kernels without it)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from pipeline import git, worktree_reads
from pipeline.worktree_reads import Reader, Refused
from tests.conftest import git as run_git

STRATEGIES = ("openat2", "walk")


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "wt"
    root.mkdir()
    (root / "plan.md").write_text("# Plan\n1. do it\n")
    (root / "docs").mkdir()
    (root / "docs" / "notes.md").write_text("notes")
    return root


def test_this_kernel_has_openat2():
    # Otherwise the "openat2" cases below would test nothing but an error path.
    assert worktree_reads.openat2_available()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_regular_file_is_read_and_a_missing_one_is_none(tree, strategy):
    reader = Reader(tree, strategy=strategy)
    assert reader.read_text("plan.md") == "# Plan\n1. do it\n"
    assert reader.read_text("docs/notes.md") == "notes"
    assert reader.read_text("absent.md") is None
    assert reader.read_text("docs/absent/deeper.md") is None
    assert reader.read_text("plan.md/below") is None  # a file used as a directory: not there


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_symlinked_file_is_refused_naming_its_target(tree, strategy):
    (tree / "plan.md").unlink()
    (tree / "plan.md").symlink_to("/proc/self/environ")
    with pytest.raises(Refused, match=r"^plan\.md is a symlink to /proc/self/environ: refused$"):
        Reader(tree, strategy=strategy).read_text("plan.md")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_symlink_inside_the_worktree_is_refused_too(tree, strategy):
    (tree / "review.md").symlink_to("plan.md")
    with pytest.raises(Refused, match="review.md is a symlink to plan.md"):
        Reader(tree, strategy=strategy).read_text("review.md")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_symlinked_directory_component_is_refused(tree, strategy):
    (tree / "up").symlink_to("/")
    with pytest.raises(Refused, match=r"^up is a symlink to /: refused$"):
        Reader(tree, strategy=strategy).read_text("up/etc/passwd")
    (tree / "docs" / "deep").symlink_to("../..")
    with pytest.raises(Refused, match=r"docs/deep is a symlink to \.\./\.\."):
        Reader(tree, strategy=strategy).read_text("docs/deep/wt/plan.md")


@pytest.mark.parametrize("rel", ["../outside", "docs/../../outside", "/etc/passwd", ""])
def test_paths_that_leave_the_worktree_are_refused(tree, rel):
    with pytest.raises(Refused):
        Reader(tree).read_text(rel)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_hardlink_is_refused(tree, tmp_path, strategy):
    outside = tmp_path / "key.pem"
    outside.write_text("PRIVATE")
    os.link(outside, tree / "review.md")
    with pytest.raises(Refused, match=r"review\.md is a hardlink \(2 names for one file\): refused"):
        Reader(tree, strategy=strategy).read_text("review.md")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_fifo_is_refused_at_once(tree, strategy):
    (tree / "plan.md").unlink()
    os.mkfifo(tree / "plan.md")
    started = time.monotonic()
    with pytest.raises(Refused, match=r"plan\.md is a FIFO, not a regular file: refused"):
        Reader(tree, strategy=strategy, seconds=5).read_text("plan.md")
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_directory_and_a_socket_are_refused(tree, strategy):
    with pytest.raises(Refused, match="docs is a directory"):
        Reader(tree, strategy=strategy).read_text("docs")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tree / "review.md"))
        with pytest.raises(Refused, match="review.md is a socket or a device, not a regular file: refused"):
            Reader(tree, strategy=strategy).read_text("review.md")
    finally:
        sock.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_sparse_gigabyte_is_refused_unread(tree, strategy):
    with open(tree / "plan.md", "wb") as fh:
        fh.truncate(1 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(Refused, match=r"plan\.md is 1073741824 bytes; the limit is 262144: refused"):
            Reader(tree, strategy=strategy).read_text("plan.md")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_the_per_file_cap_is_a_setting_and_is_checked_exactly(tree, settings):
    settings.TACX = {**settings.TACX, "HANDBACK_FILE_MAX_BYTES": 10}
    (tree / "ten.md").write_bytes(b"x" * 10)
    (tree / "eleven.md").write_bytes(b"x" * 11)
    reader = Reader(tree)
    assert reader.read_text("ten.md") == "x" * 10
    with pytest.raises(Refused, match="eleven.md is 11 bytes; the limit is 10"):
        reader.read_text("eleven.md")


def test_an_attempt_reads_at_most_the_overall_cap(tree):
    (tree / "a.md").write_bytes(b"a" * 600)
    reader = Reader(tree, total_max=1000)
    reader.read_text("a.md")
    with pytest.raises(Refused, match="a.md is 600 bytes; the limit is 400"):
        reader.read_text("a.md")
    assert reader.refusals == ["a.md is 600 bytes; the limit is 400: refused"]


def test_a_read_that_blocks_is_given_up_after_the_timeout(tree, monkeypatch):
    # A stand-in for a FUSE file whose daemon never answers: the read call blocks.
    release = threading.Event()
    real_read = os.read

    def blocking_read(fd, n):
        if threading.current_thread().name.startswith("tacx-handback-"):
            release.wait(30)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", blocking_read)
    started = time.monotonic()
    try:
        with pytest.raises(Refused, match=r"plan\.md could not be read within 0\.5 s"):
            Reader(tree, seconds=0.5).read_text("plan.md")
    finally:
        release.set()
    assert time.monotonic() - started < 2


def test_text_has_no_nul_and_bad_utf8_is_replaced(tree):
    (tree / "plan.md").write_bytes(b"a\x00b\xffc")
    assert Reader(tree).read_text("plan.md") == "a\ufffdb\ufffdc"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unlink_removes_a_symlink_itself_never_its_target_nor_through_a_symlinked_parent(tree, tmp_path, strategy):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "plan.md").write_text("keep me")
    (tree / "plan.md").unlink()
    (tree / "plan.md").symlink_to(outside / "plan.md")
    reader = Reader(tree, strategy=strategy)
    assert reader.unlink("plan.md") is True
    assert not (tree / "plan.md").is_symlink() and (outside / "plan.md").read_text() == "keep me"
    (tree / "elsewhere").symlink_to(outside)
    assert reader.unlink("elsewhere/plan.md") is False
    assert (outside / "plan.md").read_text() == "keep me"
    assert reader.unlink("absent.md") is False


def test_commit_subjects_are_one_capped_line():
    assert worktree_reads.commit_subject("fix it") == "fix it"
    long = worktree_reads.commit_subject("x" * 5000)
    assert len(long) == worktree_reads.SUBJECT_MAX_CHARS and long.endswith("…")
    assert worktree_reads.commit_subject("a\x00b") == "a\ufffdb"


# --- embedded repositories, gitlinks and what a commit may add ----------------------------------


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    run_git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("hello\n")
    (root / "sub").mkdir()
    (root / "sub" / "a.txt").write_text("a\n")
    run_git(root, "add", "-A")
    run_git(root, "commit", "-q", "-m", "base")
    return root


def test_embedded_repositories_are_found_without_following_symlinks(repo, tmp_path):
    (repo / "vendor" / "lib" / ".git").mkdir(parents=True)
    (repo / "deep" / "er").mkdir(parents=True)
    (repo / "deep" / "er" / ".git").write_text("gitdir: /somewhere\n")
    other = tmp_path / "other"
    (other / ".git").mkdir(parents=True)
    (repo / "linked").symlink_to(other)  # not walked: its .git is not this worktree's concern
    assert worktree_reads.nested_repositories(repo) == ["deep/er/.git", "vendor/lib/.git"]
    with pytest.raises(Refused, match=r"embedded git repository \(deep/er/\.git, vendor/lib/\.git\)"):
        worktree_reads.refuse_nested_repositories(repo)


def test_the_scan_refuses_a_tree_larger_than_its_limit(repo):
    with pytest.raises(Refused, match="more than 3 files and directories"):
        worktree_reads.nested_repositories(repo, max_entries=3)


def test_a_gitlink_in_the_index_is_refused_unless_allowed(repo):
    head = git.head(repo)
    run_git(repo, "update-index", "--add", "--cacheinfo", f"160000,{head},vendor/lib")
    assert worktree_reads.gitlinks(repo) == ["vendor/lib"]
    with pytest.raises(Refused, match=r"submodule \(gitlink\) at vendor/lib"):
        worktree_reads.refuse_nested_repositories(repo)
    worktree_reads.refuse_nested_repositories(repo, allow_submodules=True)


def stage_symlink(repo: Path, path: str, target: str) -> None:
    link = repo / path
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    run_git(repo, "add", "-A")


@pytest.mark.parametrize(
    ("path", "target", "why"),
    [
        ("env", "/proc/self/environ", "env is a symlink to /proc/self/environ, into /proc"),
        ("dev", "/dev/../dev/mem", "into /dev"),
        ("key", "/etc/ssh/ssh_host_rsa_key", "outside the worktree"),
        ("sub/up", "../../x", "sub/up is a symlink to ../../x, outside the worktree"),
        # Each link alone stays inside; together they lead out (a/b/d is the root, x is its parent).
        ("a/b/x", "d/../..", "which leads outside the worktree"),
    ],
)
def test_a_commit_adding_a_symlink_out_of_the_worktree_is_refused(repo, path, target, why):
    base = git.head(repo)
    if path == "a/b/x":
        stage_symlink(repo, "a/b/d", "../..")
    stage_symlink(repo, path, target)
    with pytest.raises(Refused, match=why.replace("(", r"\(").replace(".", r"\.")):
        worktree_reads.refuse_changes(repo, base, staged=True)
    run_git(repo, "commit", "-q", "-m", "link")
    with pytest.raises(Refused):
        worktree_reads.refuse_changes(repo, base, staged=False)


def test_a_symlink_inside_the_worktree_may_be_committed_as_a_link(repo):
    base = git.head(repo)
    stage_symlink(repo, "docs/readme", "../README.md")
    stage_symlink(repo, "abs", str(repo.resolve() / "sub" / "a.txt"))
    worktree_reads.refuse_changes(repo, base, staged=True)
    assert git.commit_all(repo, "links") is True
    # Stored as a link: git keeps the target string, not the file's content.
    assert run_git(repo, "ls-tree", "HEAD", "docs/readme").startswith("120000 blob ")
    assert run_git(repo, "cat-file", "-p", "HEAD:docs/readme") == "../README.md"


def test_a_gitmodules_change_is_refused_unless_allowed(repo):
    base = git.head(repo)
    (repo / ".gitmodules").write_text('[submodule "x"]\n\tpath = x\n\turl = https://example.com/x.git\n')
    run_git(repo, "add", "-A")
    with pytest.raises(Refused, match=r"\.gitmodules is a \.gitmodules change; the workflow does not allow submodules"):
        worktree_reads.refuse_changes(repo, base, staged=True)
    worktree_reads.refuse_changes(repo, base, staged=True, allow_submodules=True)


def test_commit_all_runs_its_check_before_committing(repo):
    (repo / "new.txt").write_text("new\n")

    def refuse():
        raise Refused("no")

    with pytest.raises(Refused):
        git.commit_all(repo, "x", check=refuse)
    assert subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip() == "1"


def test_pin_worktree_never_reads_a_huge_dot_git_file_left_by_the_agent(repo, tmp_path):
    wt = tmp_path / "task-wt"
    git.worktree_add(repo, wt, "tacx/1-x", "main")
    (wt / ".git").unlink()
    with open(wt / ".git", "wb") as fh:
        fh.truncate(1 << 30)
    tracemalloc.start()
    try:
        git.pin_worktree(repo, wt)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert (wt / ".git").read_text().startswith("gitdir: ")


def test_kept_sessions_come_only_from_inside_the_attempts_home(tmp_path, settings):
    from pipeline import sessions
    from pipeline.providers import get_provider

    settings.VAR_DIR = tmp_path / "var"
    session = "0123abcd-0000-0000-0000-000000000000"
    elsewhere = tmp_path / "another-task-sessions" / "proj"
    elsewhere.mkdir(parents=True)
    (elsewhere / f"{session}.jsonl").write_text("another task's transcript")
    home = tmp_path / "home-of-attempt"
    (home / ".claude" / "projects").mkdir(parents=True)
    (home / ".claude" / "projects" / "x").symlink_to(elsewhere)
    assert sessions.session_keep(provider=get_provider("claude"), home=home, session_id=session, task_id=1) == 0
    (home / ".claude" / "projects" / "mine").mkdir()
    (home / ".claude" / "projects" / "mine" / f"{session}.jsonl").write_text("mine")
    assert sessions.session_keep(provider=get_provider("claude"), home=home, session_id=session, task_id=1) == 1
