"""The live diff of a task's worktree (pipeline.worktree_diff) on a real task worktree and store:
what it shows, and that it reads the agent's worktree only through the hand-back gate."""

from __future__ import annotations

import os

from pipeline import git, worktree_diff


def worktree(tmp_path, clone):
    base = git.head(clone)
    path = tmp_path / "trees" / "sample-7-1"
    git.worktree_at(clone, path, "tacx/7-greet", base)
    return path, base


def test_the_live_diff_shows_committed_uncommitted_and_new_files_per_file(tmp_path, clone):
    path, base = worktree(tmp_path, clone)
    readme = next(p for p in path.iterdir() if p.is_file() and p.name != ".git")
    readme.write_text(readme.read_text() + "a new line <script>\n")
    (path / "src").mkdir()
    (path / "src" / "greet.py").write_text("def greet():\n    return 'hi'\n")
    diff = worktree_diff.worktree_diff(worktree=path, base=base)
    by_path = {f.path: f for f in diff.files}
    assert set(by_path) == {readme.name, "src/greet.py"}
    assert by_path["src/greet.py"].status == "added" and by_path["src/greet.py"].added == 2
    assert "+a new line <script>" in by_path[readme.name].lines
    assert (diff.added, diff.removed) == (3, 0)
    # A commit the agent made counts too: the diff is against the task's base.
    git.run(["add", "-A"], cwd=path)
    git.run(["commit", "-qm", "wip"], cwd=path)
    (path / "src" / "greet.py").unlink()
    diff = worktree_diff.worktree_diff(worktree=path, base=base)
    assert [f.path for f in diff.files] == [readme.name]


def test_a_symlink_a_fifo_and_an_oversized_file_are_listed_with_the_gate_s_reason_never_read(tmp_path, clone):
    path, base = worktree(tmp_path, clone)
    (path / "secret").symlink_to("/etc/passwd")
    os.mkfifo(path / "pipe")
    (path / "big.txt").write_text("x" * (worktree_diff.FILE_BYTES_MAX + 1))
    diff = worktree_diff.worktree_diff(worktree=path, base=base)
    by_path = {f.path: f for f in diff.files}
    assert by_path["secret"].status == "refused" and "symlink" in by_path["secret"].note
    assert "root:" not in "".join(by_path["secret"].lines)
    assert by_path["big.txt"].status == "refused" and "limit" in by_path["big.txt"].note
    assert "pipe" not in by_path or by_path["pipe"].status == "refused"


def test_an_embedded_repository_stops_git_and_a_missing_worktree_is_none(tmp_path, clone):
    path, base = worktree(tmp_path, clone)
    (path / "vendor" / ".git").mkdir(parents=True)
    diff = worktree_diff.worktree_diff(worktree=path, base=base)
    assert diff.files == [] and "embedded repository (vendor/.git)" in diff.error
    assert worktree_diff.worktree_diff(worktree=tmp_path / "gone", base=base) is None


def test_a_branch_patch_is_split_per_file():
    text = "diff --git a/a.py b/a.py\nindex 1..2 100644\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x\n+y\ndiff --git a/n.txt b/n.txt\nnew file mode 100644\n--- /dev/null\n+++ b/n.txt\n@@ -0,0 +1 @@\n+n\n"
    files = worktree_diff.patch_files(text)
    assert [(f.path, f.status, f.added, f.removed) for f in files] == [("a.py", "modified", 1, 1), ("n.txt", "added", 1, 0)]
