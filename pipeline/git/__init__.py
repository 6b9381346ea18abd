"""The one place TAC-X runs `git`. Every call is an argv list (never a shell string) and every
failure raises `GitError` with the command and git's own message.

Nothing an agent wrote runs as TAC-X. An agent works in a worktree and may have written anything
there; every git command TAC-X runs therefore

- disables hooks and the programs that configuration can start (``SAFE_CONFIG``: hooks path,
  fsmonitor, credential helpers, the ``ext::`` transport, askpass), on the command line, which
  beats every configuration file;
- ignores the system and the global configuration (``GIT_CONFIG_NOSYSTEM``,
  ``GIT_CONFIG_GLOBAL=/dev/null``): TAC-X's git behaves the same on every machine, and an agent
  that writes ``~/.gitconfig`` changes nothing;
- in a worktree it has pinned (``pin_worktree``), names the task's own git directory itself
  (``GIT_DIR``, ``GIT_COMMON_DIR``, ``GIT_WORK_TREE``) instead of following the worktree's
  ``.git`` file, which the agent can point at a directory (and a config) of its own making.

Each task has a git directory of its own, its "task store" (``var/taskgit/<worktree>.git``,
``worktree_at``): its own refs, HEAD and index, and the objects of the repository's mirror
borrowed through ``objects/info/alternates``. Inside the sandbox the agent writes the store but
not its ``config``, ``hooks``, ``info`` or ``objects/info``; TAC-X rewrites those before it uses
the store, never opens an entry of it that is not a regular file or a directory, and commits and
pushes only when HEAD is the task's own branch (``check_head``). ``guard_snapshot``/``guard_check``
notice (and undo) a change to the store's configuration made with the sandbox off.

The package: `commands` runs git and asks a repository questions, `store` owns the task store's
files, `worktrees` makes, pins and removes a task's worktree and commits and pushes on its
branch. `from pipeline import git; git.x(...)` reaches all of them.
"""

from .commands import (  # noqa: F401
    SAFE_CONFIG,
    GitError,
    borrowed_objects,
    common_dir,
    diff,
    git_env,
    has_changes,
    has_commit,
    head,
    identity_env,
    is_ancestor,
    is_permanent,
    pinned_dirs,
    read_blob,
    resolve,
    run,
    safe_args,
    special_files,
    succeeds,
    task_branch,
    untracked_paths,
)
from .store import (  # noqa: F401
    EXCLUDE_MAX_BYTES,
    GUARDED_FILES,
    STORE_CONFIG,
    STORE_READ_ONLY,
    guard_check,
    guard_snapshot,
    own_store_files,
    store_path,
    write_excludes,
)
from .worktrees import (  # noqa: F401
    branch_name,
    check_head,
    commit_all,
    pin_worktree,
    push,
    remove_orphan_store,
    repository_lock,
    slugify,
    worktree_add,
    worktree_at,
    worktree_path,
    worktree_remove,
)
