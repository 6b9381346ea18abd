"""MCP servers a workflow declares (`mcp:` at the top level and per stage), as data.

Two kinds, as the Model Context Protocol defines its transports:

- *stdio*: ``command`` (a program name or a path), ``args``, and ``env``, whose values are plain
  settings (strings) or ``{secret: NAME}``: the value of TAC-X's environment variable NAME,
  read when an attempt starts (like `setup_env`), never stored in the workflow snapshot or the
  database. The CLI spawns the server, inside the attempt's sandbox.
- *http* (streamable HTTP): ``url`` and ``headers``, whose values are plain strings or
  ``{secret: NAME, prefix: "Bearer "}``. The URL's host must be on the stage's egress
  allow-list (checked by the workflow validator, enforced by the sandbox).

Server names are letters, digits and ``-`` (at most 40): every CLI can then name its tools
unambiguously (claude ``mcp__<server>__<tool>``, gemini and qwen ``mcp_<server>_<tool>``, codex
``<server>.<tool>``, opencode ``<server>_<tool>``).

This module only parses and resolves; it imports nothing of TAC-X's above the lib floor.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,39}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An HTTP header name (RFC 9110 token characters).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
MAX_SERVERS = 16
MAX_ARGS = 64
_STDIO_KEYS = {"command", "args", "env"}
_HTTP_KEYS = {"url", "headers"}
_SECRET_KEYS = {"secret", "prefix"}
# Transports: what a server is, by the keys it has.
STDIO, HTTP = "stdio", "http"


@dataclass(frozen=True)
class Value:
    """A setting (``text``) or a secret (``secret``: the name of TAC-X's environment variable
    holding it; ``text`` is then a prefix such as ``Bearer ``)."""

    text: str = ""
    secret: str = ""

    def to_json(self) -> Any:
        if not self.secret:
            return self.text
        return {"secret": self.secret, **({"prefix": self.text} if self.text else {})}

    def resolve(self, environ: Mapping[str, str]) -> str:
        return self.text + environ[self.secret] if self.secret else self.text


@dataclass(frozen=True)
class McpServer:
    """One declared server (see the module docstring)."""

    name: str
    transport: str  # STDIO or HTTP
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, Value], ...] = ()
    url: str = ""
    headers: tuple[tuple[str, Value], ...] = ()

    @property
    def secrets(self) -> tuple[str, ...]:
        """The names of the secrets this server is given."""
        return tuple(v.secret for _, v in (*self.env, *self.headers) if v.secret)

    def to_json(self) -> dict:
        if self.transport == HTTP:
            return {"url": self.url, "headers": {k: v.to_json() for k, v in self.headers}}
        return {"command": self.command, "args": list(self.args), "env": {k: v.to_json() for k, v in self.env}}


@dataclass(frozen=True)
class ResolvedServer:
    """A server with its secrets' values filled in, for one attempt: what the provider writes
    into the CLI's configuration in the attempt's private HOME."""

    name: str
    transport: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()


class SecretMissing(LookupError):
    """A declared server names a secret that TAC-X's environment does not have."""


def resolve(
    servers: tuple[McpServer, ...], environ: Mapping[str, str] | None = None
) -> tuple[tuple[ResolvedServer, ...], tuple[str, ...]]:
    """The servers with their secrets' values (from ``environ``, default TAC-X's environment,
    where `setup_env` secrets come from too) and those values (to redact them from the record).
    Raises SecretMissing naming the server and the secret when one is not set."""
    source = os.environ if environ is None else environ
    out, values = [], []
    for server in servers:
        for name in server.secrets:
            if not source.get(name):
                raise SecretMissing(
                    f"MCP server {server.name!r} needs the secret {name}, which is not set in TAC-X's environment"
                )
            values.append(source[name])
        out.append(
            ResolvedServer(
                name=server.name,
                transport=server.transport,
                command=server.command,
                args=server.args,
                env=tuple((k, v.resolve(source)) for k, v in server.env),
                url=server.url,
                headers=tuple((k, v.resolve(source)) for k, v in server.headers),
            )
        )
    return tuple(out), tuple(dict.fromkeys(values))


def url_host(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, the port defaulting by scheme; the host lower-case, an
    IPv6 literal in brackets."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def host_allowed(url: str, allow: tuple[str, ...]) -> bool:
    """Whether the sandbox's allow-list ``allow`` (workflow validator syntax: ``host``,
    ``*.domain``, IP literals, each with an optional ``:port``) lets the agent reach ``url``.
    An entry without a port allows every port of its host; ``*.domain`` allows its subdomains."""
    host, port = url_host(url)
    for entry in allow:
        entry = entry.lower()
        name, entry_port = entry, None
        m = re.fullmatch(r"(.*?)(?::(\d{1,5}))?", entry)
        if m and m.group(2) and not entry.endswith("]"):
            name, entry_port = m.group(1), int(m.group(2))
        if entry_port is not None and entry_port != port:
            continue
        if name == host or (name.startswith("*.") and host.endswith(name[1:])):
            return True
    return False


Fail = Callable[[str, str], Exception]


def parse_servers(value: Any, where: str, fail: Fail, *, stage: bool = False) -> tuple[tuple[McpServer, ...], tuple[str, ...]]:
    """``{name: server, ...}`` as (servers, names turned off). In a stage (`stage`), ``false``
    for the whole key turns every inherited server off (``("*",)``) and ``name: false`` one of
    them. Raises ``fail(where, problem)`` at the first problem."""
    if value is None:
        return (), ()
    if stage and value is False:
        return (), ("*",)
    if not isinstance(value, dict):
        shape = "a mapping of server name to {command, args, env} or {url, headers}"
        raise fail(where, f"must be {shape}" + (", or false to turn the workflow's servers off" if stage else ""))
    if len(value) > MAX_SERVERS:
        raise fail(where, f"declares {len(value)} servers; at most {MAX_SERVERS}")
    servers, off = [], []
    for name, spec in value.items():
        here = f"{where}.{name}"
        if not isinstance(name, str) or not SERVER_NAME.fullmatch(name):
            raise fail(
                here,
                "a server name must be letters, digits and - (at most 40, starting with a letter or digit), so every CLI can name its tools",
            )
        if stage and (spec is False or spec is None):
            off.append(name)
            continue
        servers.append(_server(name, spec, here, fail))
    return tuple(servers), tuple(off)


def _server(name: str, spec: Any, where: str, fail: Fail) -> McpServer:
    if not isinstance(spec, dict):
        raise fail(
            where, "must be a mapping: {command, args, env} for a stdio server or {url, headers} for a streamable HTTP server"
        )
    if "command" in spec and "url" in spec:
        raise fail(where, "has both command (stdio) and url (streamable HTTP); a server is one or the other")
    if "url" in spec:
        _check_keys(spec, _HTTP_KEYS, where, fail, "a streamable HTTP server")
        url = spec["url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise fail(f"{where}.url", f"must be an http:// or https:// URL, got {_short(url)}")
        parts = urlsplit(url)
        try:
            _ = parts.port  # urlsplit checks the port only when asked
        except ValueError:
            raise fail(f"{where}.url", f"has an invalid port: {_short(url)}") from None
        if not parts.hostname or parts.username or parts.password:
            raise fail(
                f"{where}.url", "must name a host and carry no user or password (put credentials in headers, from a secret)"
            )
        headers = _values(spec.get("headers"), f"{where}.headers", fail, key=_HEADER_NAME, what="an HTTP header name")
        return McpServer(name=name, transport=HTTP, url=url, headers=headers)
    if "command" not in spec:
        raise fail(where, "needs command (a stdio server) or url (a streamable HTTP server)")
    _check_keys(spec, _STDIO_KEYS, where, fail, "a stdio server")
    command = spec["command"]
    if not isinstance(command, str) or not command.strip() or "\x00" in command:
        raise fail(f"{where}.command", f"must be a program name or path, got {_short(command)}")
    args = spec.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str | int | float) and not isinstance(a, bool) for a in args):
        raise fail(f"{where}.args", "must be a list of strings")
    if len(args) > MAX_ARGS or any("\x00" in str(a) for a in args):
        raise fail(f"{where}.args", f"must be at most {MAX_ARGS} arguments without NUL characters")
    env = _values(spec.get("env"), f"{where}.env", fail, key=_ENV_NAME, what="an environment variable name")
    return McpServer(name=name, transport=STDIO, command=command, args=tuple(str(a) for a in args), env=env)


def _values(value: Any, where: str, fail: Fail, *, key: re.Pattern, what: str) -> tuple[tuple[str, Value], ...]:
    """``{NAME: "text" | {secret: NAME, prefix: "..."}}``."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise fail(where, "must be a mapping of name to a value or {secret: NAME}")
    out = []
    for name, val in value.items():
        here = f"{where}.{name}"
        if not isinstance(name, str) or not key.fullmatch(name):
            raise fail(here, f"must be {what}")
        if isinstance(val, dict):
            _check_keys(val, _SECRET_KEYS, here, fail, "a secret")
            secret, prefix = val.get("secret"), val.get("prefix", "")
            if not isinstance(secret, str) or not _ENV_NAME.fullmatch(secret):
                raise fail(f"{here}.secret", f"must name one of TAC-X's environment variables, got {_short(secret)}")
            if secret.startswith("TACX_") or secret in FORBIDDEN_SECRETS:
                raise fail(f"{here}.secret", f"{secret} is TAC-X's own credential and is never handed to an MCP server")
            if not isinstance(prefix, str) or "\x00" in prefix or "\n" in prefix:
                raise fail(f"{here}.prefix", "must be a one-line string")
            out.append((name, Value(text=prefix, secret=secret)))
            continue
        if isinstance(val, bool):
            val = "true" if val else "false"
        if not isinstance(val, str | int | float) or "\x00" in str(val) or (key is _HEADER_NAME and "\n" in str(val)):
            raise fail(here, f"must be a string, a number or {{secret: NAME}}, got {_short(val)}")
        out.append((name, Value(text=str(val))))
    return tuple(out)


# TAC-X's own credentials: never a secret of an MCP server (the same list setup_env refuses,
# plus the forge tokens agents never hold).
FORBIDDEN_SECRETS = frozenset(
    {
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "GITHUB_WEBHOOK_SECRET",
        "GITHUB_APP_ID",
        "GITHUB_APP_PRIVATE_KEY",
        "GITHUB_APP_PRIVATE_KEY_FILE",
        "DATABASE_URL",
        "DJANGO_SECRET_KEY",
        "SECRET_KEY",
    }
)


def _check_keys(value: dict, allowed: set[str], where: str, fail: Fail, what: str) -> None:
    for key in sorted(set(value) - allowed, key=str):
        raise fail(f"{where}.{key}", f"unknown key for {what} (allowed: {', '.join(sorted(allowed))})")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def merge(workflow: tuple[McpServer, ...], stage: tuple[McpServer, ...], off: tuple[str, ...]) -> tuple[McpServer, ...]:
    """A stage's servers: the workflow's, less those it turns off (all with ``*``), with its own
    replacing any of the same name."""
    inherited = () if "*" in off else tuple(s for s in workflow if s.name not in off)
    own = {s.name for s in stage}
    return (*(s for s in inherited if s.name not in own), *stage)
