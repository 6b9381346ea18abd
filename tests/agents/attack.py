"""A hostile agent: tries everything the agent sandbox must keep out of reach, then writes what it
got to plan.md (so the planning stage "succeeds" and its report is stored) and prints it.

    python attack.py SPEC_JSON

SPEC_JSON names the targets: worker_pid, database, worktree_root, sibling_file, ssh_key,
tacx_file, var_file, outside_file, allowed_port, denied_port, origin. Each check is reported as
{"ok": true, "value": ...} when the attack worked and {"ok": false, "error": ...} when it failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

spec = json.loads(sys.argv[1])
report: dict[str, dict] = {}


def attempt(name: str, fn) -> None:
    try:
        value = fn()
    except BaseException as exc:  # noqa: BLE001 - every failure is a result here
        report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    else:
        report[name] = {"ok": True, "value": value if isinstance(value, list) else str(value)[:2000]}


def read(path: str) -> str:
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", errors="replace")


def write_outside() -> str:
    with open(spec["outside_file"], "w") as fh:
        fh.write("written by the agent")
    return "written"


def http(port: int) -> str:
    # urllib honours http_proxy: the sandbox's filtering proxy is the only way out.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        return resp.read().decode()


def git_push() -> str:
    proc = subprocess.run(["git", "push", spec["origin"], "HEAD:refs/heads/evil"], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise RuntimeError(proc.stderr.strip()[-200:])
    return "pushed"


attempt("proc1_environ", lambda: read("/proc/1/environ"))
attempt("worker_environ", lambda: read(f"/proc/{spec['worker_pid']}/environ"))
attempt("processes", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
if spec.get("database"):
    attempt("database", lambda: read(spec["database"]))
attempt("worktree_root", lambda: sorted(os.listdir(spec["worktree_root"])))
attempt("sibling_file", lambda: read(spec["sibling_file"]))
attempt("ssh_key", lambda: read(spec["ssh_key"]))
attempt("tacx_file", lambda: read(spec["tacx_file"]))
attempt("var_file", lambda: read(spec["var_file"]))
attempt("write_outside", write_outside)


def overwrite_sibling() -> str:
    with open(spec["sibling_file"], "w") as fh:
        fh.write("overwritten by the agent")
    return "overwritten"


attempt("overwrite_sibling", overwrite_sibling)
attempt("allowed_port", lambda: http(spec["allowed_port"]))
attempt("denied_port", lambda: http(spec["denied_port"]))
attempt("git_push", git_push)

text = json.dumps(report, sort_keys=True)
with open("plan.md", "w") as fh:
    fh.write("# Attack report\n\n" + text + "\n")
print(text)
