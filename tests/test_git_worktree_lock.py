"""`git worktree add` and `prune` on one repository are serialised on each machine (issue 10,
item 4): in a drain one concurrent add failed (a prune run by another worker can remove the
metadata of a worktree being added). Real git, real threads; the lock is a file lock, so it holds
between processes too."""

from __future__ import annotations

import threading

from pipeline import git
from tests.conftest import git as run_git


def test_a_worktree_is_not_added_while_another_holds_the_repository(origin_and_clone, tmp_path, settings):
    clone = origin_and_clone[1]
    head = run_git(clone, "rev-parse", "HEAD")
    path = tmp_path / "trees" / "one"
    errors: list[BaseException] = []

    def add() -> None:
        try:
            git.worktree_at(clone, path, "tacx/1-one", head)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with git.repository_lock(clone):
        worker = threading.Thread(target=add)
        worker.start()
        worker.join(1.0)
        # Without the lock the add takes a few milliseconds; with it, it waits for us.
        assert worker.is_alive() and not (path / ".git").exists()
    worker.join(30)
    assert not errors and (path / ".git").exists()
    assert run_git(path, "rev-parse", "HEAD") == head


def test_many_workers_adding_worktrees_to_one_repository_at_once_all_succeed(origin_and_clone, tmp_path):
    clone = origin_and_clone[1]
    head = run_git(clone, "rev-parse", "HEAD")
    errors: list[BaseException] = []

    def add(n: int) -> None:
        try:
            for round_ in range(3):
                path = tmp_path / "trees" / f"w{n}-{round_}"
                git.worktree_at(clone, path, f"tacx/{n}-{round_}", head)
                if round_ < 2:
                    git.worktree_remove(clone, path)  # prunes, as the clean-up does
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    # Each worktree has a git directory of its own (its task store), at the head on its branch.
    for n in range(8):
        path = tmp_path / "trees" / f"w{n}-2"
        assert run_git(path, "rev-parse", "HEAD") == head
        assert run_git(path, "symbolic-ref", "HEAD") == f"refs/heads/tacx/{n}-2"
        assert not (tmp_path / "trees" / f"w{n}-0").exists() and not git.store_path(tmp_path / "trees" / f"w{n}-0").exists()
