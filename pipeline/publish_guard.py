"""The last wall before anything leaves: no secret TAC-X holds is posted to the forge or pushed.

Everything TAC-X posts (every write of ``GitHubClient``: pull requests, comments, replies, check
runs, statuses, reviews) and every push (what the push adds to the origin: each new commit,
tree and blob, binary included) is scanned for the values of the secrets TAC-X holds:

* the environment variables named by ``TACX["PUBLISH_SECRET_ENV"]`` (``TACX_PUBLISH_SECRET_ENV``,
  comma-separated) and every variable whose name looks like a secret (``TOKEN``, ``SECRET``,
  ``PASSWORD``, ``API_KEY``, ... as in ``providers.base.SECRET_NAME``); of a URL (``DATABASE_URL``)
  its password too;
* ``GITHUB_TOKEN``, ``GITHUB_WEBHOOK_SECRET``, the databases' passwords from the settings;
* the GitHub App's private key (``GITHUB_APP_PRIVATE_KEY`` or the file named by
  ``GITHUB_APP_PRIVATE_KEY_FILE``): each line of its PEM body, and the key's DER bytes;
* the API tokens stored in the database (DRF ``authtoken``);
* for a push or a text of one task, the secrets its workflow hands MCP servers (``mcp:``, by
  name: ``task_secret_names``), whatever their names look like.

Values shorter than ``MIN_SECRET_LENGTH`` (12) characters are ignored: too short to tell a leak
from chance. Each value is looked for raw, URL-encoded (``quote``, ``quote_plus`` and every byte as
``%XX``, upper- and lower-case hex), as hex (lower and upper case) and as base64 (standard and URL-safe alphabets, at each of the three
alignments a value can have inside a longer encoded text); hex and base64 are also found when
they are wrapped over lines or split by spaces or punctuation (they are looked for in the text
with everything outside the base64 alphabet removed).

On a hit the post or push does not happen: ``PublishBlocked`` (permanent) is raised with a message
naming the secret's name, the encoding and where it was, never the value, and an alert is sent.
The encoded needles are computed once per set of secret values (a process keeps them until a
value changes); a scan is one ``bytes.find`` per needle and layer, in C.

This is a second wall: the first is that what TAC-X reads from a worktree crosses the gate.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import subprocess
import threading
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes, quote_plus, unquote_to_bytes, urlsplit

from django.conf import settings
from rest_framework.authtoken.models import Token

from . import alerts, git
from .models import Task
from .providers.base import SECRET_NAME
from .workflow import Workflow

log = logging.getLogger(__name__)

MIN_SECRET_LENGTH = 12
DEFAULT_SECRET_ENV = (
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "GITHUB_WEBHOOK_SECRET",
    "GITHUB_APP_PRIVATE_KEY",
    "GITLAB_TOKEN",
    "GITLAB_WEBHOOK_SECRET",
    "SECRET_KEY",
    "DATABASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "OPENAI_API_KEY",
    "CODEX_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "OPENCODE_API_KEY",
    "DASHSCOPE_API_KEY",
    "OPENROUTER_API_KEY",
    "TACX_METRICS_TOKEN",
)
DEFAULT_MAX_PUSH_BYTES = 64 * 1024 * 1024

# Bytes kept in the "squeezed" layer: the base64 alphabets (both) and hex digits are inside it.
_KEEP = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
_DROP = bytes(b for b in range(256) if b not in _KEEP)

RAW, SQUEEZED = "raw", "squeezed"


class PublishBlocked(Exception):
    """A post or push carried a secret's value; it did not happen. Never retried."""

    permanent = True
    outcome = "failed"


@dataclass(frozen=True)
class Needle:
    secret: str  # the secret's name, e.g. ANTHROPIC_API_KEY
    encoding: str  # raw, URL-encoded, hex, base64, ...
    layer: str  # which form of the content it is looked for in
    value: bytes


@dataclass(frozen=True)
class Hit:
    secret: str
    encoding: str
    where: str

    def sentence(self) -> str:
        """What was found, never the value: "the value of X (base64)"."""
        how = "" if self.encoding == "raw" else f" ({self.encoding})"
        return f"the value of {self.secret}{how}"


# --- the secrets --------------------------------------------------------------------------------


def secret_env_names(extra: Iterable[str] = ()) -> tuple[str, ...]:
    configured = settings.TACX.get("PUBLISH_SECRET_ENV") or DEFAULT_SECRET_ENV
    return tuple(dict.fromkeys([*configured, *(k for k in os.environ if SECRET_NAME.search(k)), *extra]))


def task_secret_names(task: Task | None) -> tuple[str, ...]:
    """The names of the secrets `task`'s workflow hands its MCP servers (any stage)."""
    if task is None or not task.workflow:
        return ()
    try:
        workflow = Workflow.from_json(task.workflow)
    except Exception:  # noqa: BLE001 - an unreadable snapshot adds nothing; the others still apply
        return ()
    servers = [*workflow.mcp, *(server for stage in workflow.stages for server in stage.mcp)]
    return tuple(dict.fromkeys(name for server in servers for name in server.secrets))


def secret_values(extra: Iterable[str] = ()) -> list[tuple[str, bytes]]:
    """(name, value) of every secret TAC-X holds now (and of the variables named in `extra`);
    values below the minimum length left out."""
    found: list[tuple[str, str | bytes]] = []
    for name in secret_env_names(extra):
        value = os.environ.get(name, "")
        found.append((name, value))
        if "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.append((f"{name} (its password)", unquote_to_bytes(password)))
    for name in ("GITHUB_TOKEN", "GITHUB_WEBHOOK_SECRET", "GITLAB_TOKEN", "GITLAB_WEBHOOK_SECRET"):
        found.append((name, getattr(settings, name, "") or ""))
    for alias, db in settings.DATABASES.items():
        found.append((f"the password of database {alias!r}", db.get("PASSWORD") or ""))
    found.append(("TACX_METRICS_TOKEN", settings.TACX.get("METRICS_TOKEN") or ""))
    found += _app_key_values()
    try:
        for user, key in Token.objects.values_list("user__username", "key"):
            found.append((f"the API token of user {user!r}", key))
    except Exception:  # noqa: BLE001 - no table yet (a fresh database): no stored tokens
        log.debug("no API tokens to guard", exc_info=True)
    out: dict[bytes, str] = {}
    for name, value in found:
        raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        if len(raw.strip()) >= MIN_SECRET_LENGTH and raw not in out:
            out[raw] = name
    return [(name, raw) for raw, name in out.items()]


def _app_key_values() -> list[tuple[str, bytes]]:
    pem = (getattr(settings, "GITHUB_APP_PRIVATE_KEY", "") or "").replace("\\n", "\n")
    key_file = getattr(settings, "GITHUB_APP_PRIVATE_KEY_FILE", "") or ""
    name = "the GitHub App private key"
    if key_file:
        try:
            pem = Path(key_file).read_text(encoding="utf-8", errors="replace")
            name = "the GitHub App private key (GITHUB_APP_PRIVATE_KEY_FILE)"
        except OSError:
            pass
    body = [line.strip() for line in pem.splitlines() if line.strip() and not line.startswith("-----")]
    if not body:
        return []
    values = [(name, line.encode()) for line in body]
    try:
        values.append((name, base64.b64decode("".join(body), validate=False)))
    except ValueError:
        pass
    return values


# --- the needles --------------------------------------------------------------------------------


def _percent(value: bytes) -> list[bytes]:
    """The URL encodings of `value`: `quote` (with and without `/` kept, `quote_plus`) and every
    byte as %XX, each with upper- and lower-case hex digits."""
    forms = {quote_from_bytes(value, safe=""), quote_from_bytes(value, safe="/"), quote_plus(value, safe="")}
    forms.add("".join(f"%{b:02X}" for b in value))
    out = set()
    for form in forms:
        out.add(form.encode())
        out.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), form).encode())
    out.discard(value)
    return sorted(out)


def needles_for(name: str, value: bytes) -> list[Needle]:
    needles = [Needle(name, "raw", RAW, value)]
    needles += [Needle(name, "URL-encoded", RAW, form) for form in _percent(value)]
    squeezed = value.translate(None, _DROP)
    if squeezed == value:
        needles.append(Needle(name, "split over lines", SQUEEZED, value))
    needles += [Needle(name, "hex", SQUEEZED, value.hex().encode()), Needle(name, "hex", SQUEEZED, value.hex().upper().encode())]
    for start in range(3):
        part = value[start:]
        part = part[: len(part) // 3 * 3]
        if len(part) < 9:
            continue
        std = base64.b64encode(part)
        needles.append(Needle(name, "base64", SQUEEZED, std))
        safe = std.replace(b"+", b"-").replace(b"/", b"_")
        if safe != std:
            needles.append(Needle(name, "base64url", SQUEEZED, safe))
    return needles


_cache_lock = threading.Lock()
_cache: tuple[frozenset, tuple[Needle, ...]] = (frozenset(), ())


def current_needles(extra: Iterable[str] = ()) -> tuple[Needle, ...]:
    """The needles of the secrets held now (and of the variables named in `extra`), computed
    again only when a value changed."""
    global _cache
    values = secret_values(extra)
    key = frozenset(values)
    with _cache_lock:
        if _cache[0] != key:
            built: dict[tuple[str, bytes], Needle] = {}
            for name, value in sorted(values, key=lambda v: -len(v[1])):
                for needle in needles_for(name, value):
                    built.setdefault((needle.layer, needle.value), needle)
            _cache = (key, tuple(built.values()))
        return _cache[1]


# --- scanning -----------------------------------------------------------------------------------


def scan(pieces: Iterable[tuple[str, bytes]], needles: tuple[Needle, ...] | None = None) -> Hit | None:
    """The first secret found in any piece ((where, content) pairs), or None."""
    needles = current_needles() if needles is None else needles
    pieces = [(where, data) for where, data in pieces if data]
    if not needles or not pieces:
        return None
    for layer in (RAW, SQUEEZED):
        wanted = [n for n in needles if n.layer == layer]
        if not wanted:
            continue
        haystack, starts = _layer(pieces, layer)
        if not haystack:
            continue
        for needle in wanted:
            at = haystack.find(needle.value)
            if at >= 0:
                return Hit(needle.secret, needle.encoding, pieces[bisect_right(starts, at) - 1][0])
    return None


def _layer(pieces: list[tuple[str, bytes]], layer: str) -> tuple[bytes, list[int]]:
    """The pieces in one form, joined by a NUL, with where each begins."""
    parts: list[bytes] = []
    starts: list[int] = []
    offset = 0
    for _, data in pieces:
        if layer == SQUEEZED:
            data = data.translate(None, _DROP)
        starts.append(offset)
        parts.append(data)
        offset += len(data) + 1
    return b"\x00".join(parts), starts


def text_pieces(value: Any, where: str) -> Iterator[tuple[str, bytes]]:
    """Every string inside a JSON-like value, named by its key path."""
    if isinstance(value, str):
        yield where, value.encode("utf-8", "surrogatepass")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from text_pieces(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from text_pieces(item, f"{where}[{i}]")


# --- the walls ----------------------------------------------------------------------------------


def check_post(method: str, path: str, payload: Any, *, repository: str = "") -> None:
    """Raise PublishBlocked (and alert) when a forge write would carry a secret."""
    if payload is None:
        return
    hit = scan(text_pieces(payload, ""))
    if hit is None:
        return
    field = hit.where.lstrip(".") or "its payload"
    message = f"TAC-X did not send {method} {path}: its field {field} carries {hit.sentence()}"
    _alert(message, repository=repository)
    raise PublishBlocked(message)


def check_text(text: str, where: str, *, task: Task | None = None) -> None:
    """Raise PublishBlocked (and alert) when `text`, about to be published as `where`, carries a secret."""
    hit = scan([(where, (text or "").encode("utf-8", "surrogatepass"))], current_needles(task_secret_names(task)))
    if hit is None:
        return
    message = f"{where} contains {hit.sentence()}; it was not published"
    _alert(message, task=task)
    raise PublishBlocked(message)


def check_push(worktree: Path, task: Task) -> None:
    """Raise PublishBlocked (and alert) when what pushing HEAD of `worktree` would add to the
    origin (its new commits, trees and blobs) carries a secret, or is too large to check."""
    limit = int(settings.TACX.get("PUBLISH_GUARD_MAX_BYTES") or DEFAULT_MAX_PUSH_BYTES)
    pieces = pushed_objects(worktree, task, limit=limit)
    if pieces is None:
        message = (
            f"the branch {task.branch} would push more than {limit // (1024 * 1024)} MiB of new objects, more than the publish guard "
            "checks (TACX_PUBLISH_GUARD_MAX_BYTES); it was not pushed"
        )
        _alert(message, task=task)
        raise PublishBlocked(message)
    hit = scan(pieces, current_needles(task_secret_names(task)))
    if hit is None:
        return
    message = f"the branch {task.branch} contains {hit.sentence()} in {hit.where}; it was not pushed"
    _alert(message, task=task)
    raise PublishBlocked(message)


def pushed_objects(worktree: Path, task: Task, *, limit: int) -> list[tuple[str, bytes]] | None:
    """(where, bytes) of every object HEAD has that the origin is known to have already: what
    is reachable from the task's base commit, and from the head TAC-X last published for it
    (checked when it was pushed). None when over `limit` bytes. The task's own git directory
    has no remote-tracking refs (pipeline/git.py: the task store), so the exclusions are commits."""
    exclude = []
    for commit in (task.base_commit, task.head_commit):
        if commit and commit not in exclude and _git(worktree, ["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"], check=False).strip():
            exclude.append(commit)
    listing = _git(worktree, ["rev-list", "--objects", "HEAD", *(["--not", *exclude] if exclude else [])])
    ids: list[str] = []
    paths: dict[str, str] = {}
    for line in listing.splitlines():
        oid, _, path = line.decode("utf-8", "replace").partition(" ")
        if oid:
            ids.append(oid)
            paths[oid] = path
    if not ids:
        return []
    checks = _git(worktree, ["cat-file", "--batch-check"], stdin="\n".join(ids).encode() + b"\n")
    total = 0
    kinds: dict[str, str] = {}
    for line in checks.splitlines():
        parts = line.decode("ascii", "replace").split()
        if len(parts) == 3 and parts[2].isdigit():
            kinds[parts[0]] = parts[1]
            total += int(parts[2])
    if total > limit:
        return None
    stream = _git(worktree, ["cat-file", "--batch"], stdin="\n".join(ids).encode() + b"\n")
    pieces: list[tuple[str, bytes]] = []
    at = 0
    while at < len(stream):
        end = stream.index(b"\n", at)
        parts = stream[at:end].decode("ascii", "replace").split()
        at = end + 1
        if len(parts) != 3:
            continue
        oid, kind, size = parts[0], parts[1], int(parts[2])
        data = stream[at : at + size]
        at += size + 1
        if kind == "commit":
            where = f"the commit {oid[:10]} (its message or author)"
        elif kind == "tree":
            where = f"the names of files in {paths.get(oid) or 'the top directory'}"
        else:
            where = paths.get(oid) or f"object {oid[:10]}"
        pieces.append((where, data))
    return pieces


def _git(cwd: Path, args: list[str], *, stdin: bytes | None = None, check: bool = True) -> bytes:
    """git with TAC-X's safe options, in bytes (paths and blobs need not be UTF-8)."""
    env = git.git_env(git.pinned_dirs(cwd))
    extra: dict[str, Any] = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    proc = subprocess.run(["git", *git.safe_args(), *args], cwd=str(cwd), capture_output=True, env=env, timeout=600, **extra)
    if check and proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise git.GitError(f"git {args[0]} failed in {cwd}: {detail[-1] if detail else proc.returncode}")
    return proc.stdout


def _alert(message: str, *, task: Task | None = None, repository: str = "") -> None:
    log.error("publish guard: %s", message)
    alerts.publish_blocked(message=message, task=task, repository=repository)
