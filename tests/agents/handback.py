"""A hostile agent for the hand-back gate: leaves traps in its worktree for TAC-X to read, run or
commit after it exits.

    python handback.py ACTIONS_JSON

ACTIONS_JSON is a list of steps, each one of
    {"write": PATH, "text": TEXT}          a regular file
    {"symlink": PATH, "to": TARGET}        (replacing PATH if it exists)
    {"hardlink": PATH, "to": EXISTING}
    {"fifo": PATH}
    {"sparse": PATH, "size": BYTES}
    {"run": ARGV}                           a command in the worktree (git, for nested repositories)
    {"mtime": PATH, "seconds": EPOCH}      a stale modification time
    {"say": TEXT}                           a line of output (e.g. a verdict)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def replace(path: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)


for step in json.loads(sys.argv[1]):
    if "write" in step:
        replace(step["write"])
        with open(step["write"], "w") as fh:
            fh.write(step["text"])
    elif "symlink" in step:
        replace(step["symlink"])
        os.symlink(step["to"], step["symlink"])
    elif "hardlink" in step:
        replace(step["hardlink"])
        os.link(step["to"], step["hardlink"])
    elif "fifo" in step:
        replace(step["fifo"])
        os.mkfifo(step["fifo"])
    elif "sparse" in step:
        replace(step["sparse"])
        with open(step["sparse"], "wb") as fh:
            fh.truncate(step["size"])
    elif "run" in step:
        proc = subprocess.run(step["run"], capture_output=True, text=True)
        print(f"$ {' '.join(step['run'])} -> {proc.returncode} {proc.stderr.strip()[-300:]}")
    elif "mtime" in step:
        os.utime(step["mtime"], (step["seconds"], step["seconds"]), follow_symlinks=False)
    elif "say" in step:
        print(step["say"])
print("done")
