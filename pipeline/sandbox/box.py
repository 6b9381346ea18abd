"""One attempt's box: its view of the machine handed to the sandbox server, the wrapped command,
the refusals it records, and what the sandbox refused over a task's attempts."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from ..lib.jsonl import json_objects
from ..models import AgentEvent
from .policy import (
    SYSTEM_DENY,
    SYSTEM_READ,
    UNSET_INSIDE,
    VIOLATION_KEYS,
    GitAccess,
    SandboxUnavailable,
    _around_writes,
    _existing,
    agent_read_paths,
    host_entry,
)
from .server import server


@dataclass
class Box:
    """One attempt's sandbox: the wrapped argv, the environment, and where refusals are written."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    home: Path
    root: Path
    violations: Path
    allowed_hosts: list[str]
    key: str = ""
    _offset: int = 0
    _partial: bytes = b""
    blocked: list[dict] = field(default_factory=list)

    def new_violations(self) -> list[dict]:
        """Refusals recorded since the last call (complete lines only), each reduced to the
        keys a ``sandbox`` event keeps."""
        try:
            with open(self.violations, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        found = [{k: entry[k] for k in VIOLATION_KEYS if k in entry} for entry in json_objects(lines)]
        self.blocked.extend(found)
        return found

    def finish(self) -> None:
        """The attempt is over: the server forgets its key (its allow-list too) and writes out the
        refusals it saw (``new_violations`` reads them)."""
        if self.key:
            try:
                server().request({"op": "done", "key": self.key}, timeout=10)
            except SandboxUnavailable:
                pass
            self.key = ""


def prepare(
    *,
    argv: list[str],
    env: Mapping[str, str],
    worktree: Path,
    git_access: GitAccess | None,
    allow_hosts: Iterable[str],
    home: Path,
    root: Path,
    extra_read: Iterable[str | Path] = (),
    extra_write: Iterable[str | Path] = (),
) -> Box:
    """The attempt's view of the machine, handed to the sandbox server, and the wrapped command."""
    ctl = root / "ctl"  # outside the agent's view: the refusal log
    ctl.mkdir(parents=True, exist_ok=True)
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    hosts: list[str] = []
    for h in allow_hosts:
        entry = host_entry(h)
        if entry and entry not in hosts:
            hosts.append(entry)
    read = [*SYSTEM_READ, *agent_read_paths(), *_existing(extra_read), str(worktree), str(home)]
    write = [str(worktree), str(home), *_existing(extra_write)]
    read += _existing(extra_write)
    # The worktree's .git file says where its git directory is: the agent must not re-point it.
    deny_write: list[str] = [str(worktree / ".git")]
    if git_access is not None:
        read += [str(p) for p in git_access.read()]
        write += [str(p) for p in git_access.write()]
        deny_write += [str(p) for p in git_access.read_only()]
    srv = server()
    read.append(str(srv.run_dir))
    filesystem = {
        "denyRead": ["/", *SYSTEM_DENY],
        "allowRead": _around_writes(_existing(read), _existing(write)),
        "allowWrite": _existing(write),
        "denyWrite": _existing(deny_write),
    }
    # One refusal log per box: the commands of one hook share a root, and each box reads its own
    # log from the start (a shared log made one refused connection count once per command).
    fd, name = tempfile.mkstemp(prefix="blocked-", suffix=".jsonl", dir=ctl)
    os.close(fd)
    violations = Path(name)
    inner_env = dict(env)
    inner_env["HOME"] = str(home)
    inner_env["TMPDIR"] = str(tmp)
    # srt sets TMPDIR=/tmp/claude inside, so it is set again for the agent, which starts in its
    # worktree (the wrapper runs from there too, so the reaper recognises the process group).
    inner = ["env", f"--chdir={worktree}", *[a for name in UNSET_INSIDE for a in ("-u", name)], f"TMPDIR={tmp}", *argv]
    answer = srv.request({"op": "wrap", "argv": inner, "filesystem": filesystem, "allow": hosts, "violations": str(violations)})
    return Box(
        argv=["/bin/bash", "-c", answer["command"]],
        env=inner_env,
        cwd=worktree,
        home=home,
        root=root,
        violations=violations,
        allowed_hosts=hosts,
        key=answer["key"],
    )


@dataclass
class CommandBoxes:
    """The boxes of one repository command (a hook or the test command): each of its shell
    commands gets a box of its own (`wrap`), all sharing one root and one private HOME that is
    never an agent's. `close` ends them and returns what they refused, each refusal once."""

    root: Path
    home: Path
    worktree: Path
    git_access: GitAccess | None
    allow_hosts: tuple[str, ...]
    extra_read: tuple[str, ...] = ()
    extra_write: tuple[str, ...] = ()
    boxes: list[Box] = field(default_factory=list)

    def wrap(self, argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str], Path]:
        box = prepare(
            argv=argv,
            env={**env, "HOME": str(self.home), "TMPDIR": str(self.home / "tmp")},
            worktree=self.worktree,
            git_access=self.git_access,
            allow_hosts=list(self.allow_hosts),
            home=self.home,
            root=self.root,
            extra_read=self.extra_read,
            extra_write=self.extra_write,
        )
        self.boxes.append(box)
        return box.argv, box.env, box.cwd

    def close(self) -> list[dict]:
        blocked: list[dict] = []
        for box in self.boxes:
            box.finish()
            blocked.extend(box.new_violations())
        shutil.rmtree(self.root, ignore_errors=True)
        return blocked


def command_boxes(
    *,
    worktree: Path,
    git_access: GitAccess | None,
    allow_hosts: Iterable[str],
    extra_read: Iterable[str | Path] = (),
    extra_write: Iterable[str | Path] = (),
) -> CommandBoxes:
    """A fresh root and HOME (with its TMPDIR) for one repository command's boxes."""
    root = new_root()
    home = root / "home"
    (home / "tmp").mkdir(parents=True)
    return CommandBoxes(
        root=root,
        home=home,
        worktree=worktree,
        git_access=git_access,
        allow_hosts=tuple(allow_hosts),
        extra_read=tuple(str(p) for p in extra_read),
        extra_write=tuple(str(p) for p in extra_write),
    )


def new_root() -> Path:
    """A fresh private directory for one attempt (HOME, TMPDIR, the sandbox's settings)."""
    base = settings.TACX.get("SANDBOX_TMP") or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="tacx-attempt-", dir=base))
    os.chmod(root, 0o700)
    return root


def summarize(blocked: Iterable[Mapping]) -> list[tuple[str, int]]:
    """``[("evil.example:443", 2), …]``: refused destinations with counts, most first."""
    counts: dict[str, int] = {}
    for b in blocked:
        host, port = b.get("host"), b.get("port")
        key = f"{host}:{port}" if host else str(b.get("line") or "?")[:200]
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def blocked_for_task(task) -> list[tuple[str, int]]:
    """Refused destinations of all the task's attempts, with counts (``summarize``)."""

    return summarize(AgentEvent.objects.filter(task=task, kind=AgentEvent.Kind.SANDBOX).values_list("data", flat=True))


def modes_for_task(task) -> set[str]:
    """The sandbox modes the task's agent attempts ran in ("required", "off")."""

    events = AgentEvent.objects.filter(task=task, kind=AgentEvent.Kind.SYSTEM, data__subtype="sandbox").values_list("data", flat=True)
    return {e.get("mode", "") for e in events if isinstance(e, dict)}
