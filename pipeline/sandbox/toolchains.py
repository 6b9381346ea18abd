"""Named interpreters (the workflow's `toolchains:`): found on TAC-X's own PATH, made readable in
the sandbox of every hook, test command and agent of the task, and put first on the hooks' PATH.

The sandbox hides everything but the system directories, so an interpreter installed elsewhere
(pyenv, nvm, /opt, a build under /usr/local) is invisible to the repository's commands unless the
operator allows its directory by hand; `python3` then silently is the system's. A toolchain entry
is a program *name* (`python3.11`, `node`), never a path: the workflow comes from the repository,
and it may only pick among the programs the operator put on TAC-X's PATH.

A name is resolved like `shutil.which`, past a version manager's shim (a pyenv shim runs pyenv,
which the sandbox does not show: it is replaced by the interpreter of pyenv's selected version).
What becomes readable: the program, every hop of its symlink chain, and the installation prefix
of each hop that sits in a `bin/` directory (an interpreter needs its `lib/`). A prefix that is
`/` or holds TAC-X's HOME, tree, var directory, worktrees or temporary directory is never shown
(only the program's files are); the toolchain's `notes` say so.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from .policy import SYSTEM_READ

# A program name: what `toolchains:` may list (validated in pipeline.workflow as well).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_SHIM_BYTES = 4096
_PYENV_ROOT = re.compile(r'export PYENV_ROOT="([^"\n]+)"')


class ToolchainError(Exception):
    """Named toolchains that cannot be found on this machine. ``problems`` holds one sentence per
    name (``toolchains[1]: python3.12 was not found …``). Permanent: the machine will not grow it."""

    permanent = True

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Toolchain:
    name: str
    path: str  # the program as found on TAC-X's PATH (a shim replaced by what it runs)
    real: str  # where its symlinks lead
    read: tuple[str, ...]  # what the sandbox shows of it (read-only)
    bin_dirs: tuple[str, ...]  # put first on a hook's PATH, in this order
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "real": self.real, "bin_dirs": list(self.bin_dirs), "notes": list(self.notes)}


def resolve(names: Iterable[str], *, search_path: str | None = None) -> list[Toolchain]:
    """Each name resolved on `search_path` (default: TAC-X's PATH). Raises ToolchainError naming
    every name that is not found, with the directories searched and what to do."""
    found: list[Toolchain] = []
    problems: list[str] = []
    path = os.environ.get("PATH", os.defpath) if search_path is None else search_path
    for i, name in enumerate(names):
        if not NAME.fullmatch(name):
            problems.append(f"toolchains[{i}]: {name!r} is not a program name (letters, digits, . _ + -; no path)")
            continue
        program, why = _which(name, path)
        if program is None:
            dirs = list(dict.fromkeys(d for d in path.split(os.pathsep) if d and os.path.isabs(d)))
            shown = os.pathsep.join(dirs[:12]) + (f"{os.pathsep}… ({len(dirs) - 12} more)" if len(dirs) > 12 else "")
            problems.append(
                f"toolchains[{i}]: {name} was not found on TAC-X's PATH ({shown or 'empty'})"
                + (f"; {why}" if why else "")
                + f". Install {name} on every machine that runs TAC-X's workers (or put its directory on their PATH), "
                "or remove it from `toolchains` in .tac/workflow.yaml"
            )
            continue
        found.append(_toolchain(name, program))
    if problems:
        raise ToolchainError(problems)
    return found


def read_paths(toolchains: Sequence[Toolchain]) -> list[str]:
    """What the sandbox shows of these toolchains, each path once."""
    return list(dict.fromkeys(p for t in toolchains for p in t.read))


def hook_path(toolchains: Sequence[Toolchain], path: str) -> str:
    """`path` with the toolchains' bin directories first (in the order listed), each once. A
    system directory (`/usr/bin`) is not moved: it is on `path` already, and put first it would
    shadow a toolchain listed after it (`[node, python3.11]` with node in /usr/bin and python3.11
    from pyenv: `python3.11` must stay pyenv's)."""
    first = list(dict.fromkeys(d for t in toolchains for d in t.bin_dirs if not _system(d)))
    rest = [d for d in path.split(os.pathsep) if d and d not in first]
    return os.pathsep.join([*first, *rest])


def _system(directory: str) -> bool:
    real = os.path.realpath(directory)
    return any(real == d or real.startswith(d + "/") for d in (os.path.realpath(p) for p in SYSTEM_READ))


def _which(name: str, path: str) -> tuple[str | None, str]:
    """(program, "") as `shutil.which` finds it in `path`, skipping relative entries; a pyenv shim
    is replaced by the interpreter of pyenv's selected version, or skipped (pyenv's "system")
    when that version does not have it. (None, why) when nothing is found."""
    why = ""
    for entry in path.split(os.pathsep):
        if not entry or not os.path.isabs(entry):
            continue  # "" and relative entries mean the current directory: never TAC-X's
        candidate = shutil.which(name, path=entry)
        if candidate is None:
            continue
        shim = _pyenv_shim(candidate)
        if shim is None:
            return candidate, ""
        program, versions = shim
        if program:
            return program, ""
        why = f"{candidate} is a pyenv shim, and pyenv's selected version ({', '.join(versions) or 'none'}) has no {name}"
    return None, why


def _pyenv_shim(candidate: str) -> tuple[str, list[str]] | None:
    """None when `candidate` is not a pyenv shim; else (the interpreter it would run, or "" when
    the selected versions lack it or select "system", and the selected versions). The version is
    PYENV_VERSION of TAC-X's environment, else the global one ($PYENV_ROOT/version); a
    directory's `.python-version` is not looked at (TAC-X's working directory means nothing here)."""
    try:
        if os.path.getsize(candidate) > 64 * 1024:
            return None
        with open(candidate, "rb") as fh:  # the operator's file on TAC-X's PATH, not a worktree's
            head = fh.read(_SHIM_BYTES).decode("utf-8", "replace")
    except OSError:
        return None
    if not head.startswith("#!") or "pyenv" not in head or " exec " not in head:
        return None
    match = _PYENV_ROOT.search(head)
    if not match:
        return None
    root = Path(match.group(1))
    selected = os.environ.get("PYENV_VERSION", "")
    if not selected:
        try:
            selected = (root / "version").read_text()[:1000]
        except OSError:
            selected = ""
    versions = [v for v in re.split(r"[:\s]+", selected) if v and not v.startswith("#")]
    name = os.path.basename(candidate)
    for version in versions:
        if version == "system" or "/" in version or version.startswith("."):
            return "", versions
        program = root / "versions" / version / "bin" / name
        if program.is_file() and os.access(program, os.X_OK):
            return str(program), versions
    return "", versions


def _hops(program: Path) -> list[Path]:
    """`program`, every hop of its symlink chain (each link's target, as written), and the final
    real path."""
    hops = [program]
    current = program
    for _ in range(40):
        if not current.is_symlink():
            break
        current = Path(os.path.normpath(current.parent / os.readlink(current)))
        hops.append(current)
    hops.append(Path(os.path.realpath(program)))
    return list(dict.fromkeys(hops))


def _guarded() -> list[Path]:
    """Directories whose ancestors (or themselves) are never shown as a toolchain's prefix."""
    tacx = settings.TACX
    paths = [
        os.path.expanduser("~"),
        settings.BASE_DIR,
        getattr(settings, "VAR_DIR", ""),
        tacx.get("WORKTREE_ROOT", ""),
        tacx.get("SANDBOX_TMP", "") or tempfile.gettempdir(),
    ]
    return [Path(os.path.realpath(p)) for p in paths if p]


def _toolchain(name: str, program: str) -> Toolchain:
    guarded = _guarded()
    read: list[str] = []
    bin_dirs: list[str] = [os.path.dirname(program)]
    notes: list[str] = []
    for hop in _hops(Path(program)):
        if not os.path.exists(hop):
            continue
        read.append(str(hop))
        if hop.parent.name != "bin":
            continue
        prefix = hop.parent.parent
        real_prefix = Path(os.path.realpath(prefix))
        hides = [g for g in guarded if g == real_prefix or real_prefix in g.parents]
        if str(real_prefix) == "/" or hides:
            notes.append(f"{prefix} is not shown (it holds {hides[0] if hides else '/'}): only {name}'s own files are")
            continue
        read.append(str(prefix))
        bin_dirs.append(str(hop.parent))
    return Toolchain(
        name=name,
        path=program,
        real=os.path.realpath(program),
        read=tuple(dict.fromkeys(read)),
        bin_dirs=tuple(dict.fromkeys(bin_dirs)),
        notes=tuple(dict.fromkeys(notes)),
    )
