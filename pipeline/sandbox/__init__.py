"""Agent containment: every agent attempt runs inside a sandbox, on by default.

The sandbox is Anthropic's ``@anthropic-ai/sandbox-runtime`` (npm, the library behind ``srt``):
on Linux it runs the command under bubblewrap with its own PID, mount, user and network
namespaces; the only way out of the network namespace is srt's host-side HTTP/SOCKS proxy
(reached over a Unix socket), which allows the hosts on the attempt's allow-list and refuses
everything else. ``server.mjs`` (next to this file) keeps the library initialised in one Node
process per TAC-X process (``Server``): an attempt asks it to wrap its command (its own
filesystem view and network allow-list, keyed by a random id its proxy connections present),
runs the wrapped command itself, and finds each refused connection as a JSON line in its
attempt directory, which the attempt's recorder turns into a ``sandbox`` event.

What the agent sees (``policy``):

- everything under ``/`` is hidden except the system directories (``/usr``, ``/etc`` without its
  secrets), the agent CLIs (``AGENT_BIN_DIRS`` and the packages they link to), paths the operator
  adds with ``TACX_SANDBOX_ALLOW_READ``, the interpreters the workflow names (``toolchains``), and:
- its worktree (read-write), and its task's own git directory (``GitAccess``): objects, refs,
  logs, index and HEAD writable, ``config``, ``hooks``, ``info`` and ``objects/info`` read-only,
  and the objects of the repository's mirror that it borrows read-only (no other task's git
  directory, no ref of the mirror or of the user's repository);
- a private, empty HOME per attempt (the CLI's own settings are written there by the provider)
  with the attempt's TMPDIR inside it.

So other tasks' worktrees, TAC-X's own tree, ``var/`` and the database file, other
repositories' mirrors, the real HOME (``~/.ssh``) and every process outside the sandbox
(``/proc/<pid>/environ``) are out of reach; the environment is the scrubbed one of
``providers.base.agent_environment``. When the attempt ends, bubblewrap's PID namespace ends
with it: no process the agent started survives (``setsid`` included).

Modes (``TACX_SANDBOX``): ``required`` (default) never starts an agent unsandboxed: if the
sandbox cannot be set up the attempt fails at once with a permanent error naming what is
missing. ``off`` is an explicit opt-out, reported by ``/health`` and a dashboard banner.

This package is a face: the policy (`policy`), the programs it needs (`tools`), the Node server
(`server`), one attempt's box and a repository command's boxes (`box`) live in modules of their
own and are re-exported here; `toolchains` (the workflow's named interpreters) is imported as
``sandbox.toolchains``.
"""

from .box import Box, CommandBoxes, blocked_for_task, command_boxes, modes_for_task, new_root, prepare, summarize
from .policy import MODES, GitAccess, SandboxUnavailable, enabled, mode
from .server import server
from .tools import _probed, status, tools

__all__ = [
    "MODES",
    "Box",
    "CommandBoxes",
    "GitAccess",
    "SandboxUnavailable",
    "_probed",
    "blocked_for_task",
    "command_boxes",
    "enabled",
    "mode",
    "modes_for_task",
    "new_root",
    "prepare",
    "server",
    "status",
    "summarize",
    "tools",
]
