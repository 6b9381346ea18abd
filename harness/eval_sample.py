"""The bundled evaluation sample (demo/eval-sample/): a small Python project written as a git
history from `history.yaml`, each commit's files whole (`files`), edited (`edit`: old, new) or
appended to (`append`), with fixed authors and dates so every build has the same commit ids."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml
from django.conf import settings

SAMPLE_DIR = settings.BASE_DIR / "demo" / "eval-sample"


class SampleError(Exception):
    pass


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SampleError(f"git {' '.join(args[:2])} in {repo}: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip()


def build(target: Path, history: Path | None = None) -> Path:
    """Write the sample's repository at `target` (which must not exist or be empty), branch
    `main`; returns `target`."""
    target = Path(target).expanduser().absolute()
    if target.exists() and any(target.iterdir()):
        raise SampleError(f"{target} exists and is not empty")
    data = yaml.safe_load(Path(history or SAMPLE_DIR / "history.yaml").read_text(encoding="utf-8"))
    target.mkdir(parents=True, exist_ok=True)
    _git(target, "init", "--quiet", "-b", "main")
    author = data["author"]
    for commit in data["commits"]:
        for path, text in (commit.get("files") or {}).items():
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            (target / path).write_text(text, encoding="utf-8")
        for path, (old, new) in (commit.get("edit") or {}).items():
            text = (target / path).read_text(encoding="utf-8")
            if old not in text:
                raise SampleError(f"{path}: {old!r} is not there to edit (commit {commit['message'].splitlines()[0]!r})")
            (target / path).write_text(text.replace(old, new, 1), encoding="utf-8")
        for path, text in (commit.get("append") or {}).items():
            with (target / path).open("a", encoding="utf-8") as f:
                f.write(text)
        _git(target, "add", "-A")
        who = {
            "GIT_AUTHOR_NAME": author["name"],
            "GIT_AUTHOR_EMAIL": author["email"],
            "GIT_AUTHOR_DATE": commit["date"],
            "GIT_COMMITTER_NAME": author["name"],
            "GIT_COMMITTER_EMAIL": author["email"],
            "GIT_COMMITTER_DATE": commit["date"],
        }
        _git(target, "-c", "commit.gpgsign=false", "commit", "--quiet", "-m", commit["message"], env=who)
    return target
