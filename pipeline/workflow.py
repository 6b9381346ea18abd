"""Workflow configuration: which stages run, with which agent, prompt, limits and budgets.

A repository may carry `.tac/workflow.yaml`; otherwise the bundled default applies. The file is
validated completely on load; any problem raises `WorkflowError` whose message names the file, the
field and the problem, and the task fails before any agent starts.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from .lib import mcp as mcp_
from .lib.candidates import (
    CANDIDATE_STAGES,
    DEFAULT_SELECT,
    CandidateSpec,
    parse_candidates,
    parse_round_candidates,
    parse_select,
)

WORKFLOW_PATH = ".tac/workflow.yaml"
# Bounds on what a repository can make TAC-X parse: the file is snapshotted into every task, and
# YAML parsing runs in the dispatcher (issue 9: a 545-byte alias bomb, 50 MB files, nesting
# 20,000 deep). A real workflow is a few KB and nests five or six levels.
MAX_WORKFLOW_BYTES = 64 * 1024
MAX_WORKFLOW_DEPTH = 32
MAX_INTEGER = 2**31 - 1  # what the database's integer columns hold
MAX_STAGE_ATTEMPTS = 100
MAX_REVIEW_ROUNDS = 100
DEFAULT_WORKFLOW_FILE = Path(__file__).with_name("default_workflow.yaml")

AGENT_PROVIDERS = ("claude", "codex", "gemini", "qwen", "opencode", "command")
# The providers whose CLI can use MCP servers (`mcp:`); each provider class says the same
# (`Provider.supports_mcp`, checked by a test). A stage of another provider with servers is
# refused on load.
MCP_PROVIDERS = ("claude", "codex", "gemini", "qwen", "opencode")
# Not inherited from a default stage that uses another provider.
_PROVIDER_SPECIFIC_KEYS = ("model", "allowed_tools", "permission_mode", "extra_args", "options")
CORE_STAGES = ("planning", "building", "reviewing", "pr_creation")
# What a prompt template may refer to; anything else is a typo the user wants to hear about.
PROMPT_FIELDS = frozenset(
    {
        "stage",
        "round",
        "issue_number",
        "issue_title",
        "issue_body",
        "repository",
        "branch",
        "plan",
        "review_feedback",
        "worktree",
        "followup",
        "test_result",
        "memory",
    }
)

HOOK_NAMES = ("setup", "before_stage", "after_stage", "cleanup")
# Default time limits (seconds) of the repository's own commands.
HOOK_TIMEOUTS = {"setup": 900, "before_stage": 300, "after_stage": 300, "cleanup": 120, "test_command": 1800}
# Never handed to a hook or test command, whatever `setup_env` says: the forge identity stays
# with TAC-X (pushes, PRs, checks are its own code).
FORBIDDEN_SETUP_ENV = frozenset(
    {"GITHUB_TOKEN", "GH_TOKEN", "GITHUB_WEBHOOK_SECRET", "GITHUB_APP_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_PRIVATE_KEY_FILE", "DATABASE_URL", "DJANGO_SECRET_KEY", "SECRET_KEY"}
)
_HOOK_KEYS = {"run", "timeout", "network", "env", "cache", "cache_key"}
# The hooks with a setup cache (pipeline.setup_cache): `setup` only.
CACHE_HOOKS = ("setup",)
MAX_CACHE_PATHS = 20
_NETWORK_KEYS = {"allow"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*(:[0-9]{1,5})?")

_STAGE_KEYS = {
    "name",
    "provider",
    "model",
    "prompt",
    "timeout",
    "max_turns",
    "allowed_tools",
    "permission_mode",
    "extra_args",
    "options",
    "temperature",
    "budget",
    "stall_timeout",
    "max_attempts",
    "network",
    "mcp",
    # Best of N (issue 25; pipeline.lib.candidates).
    "candidates",
    "select",
    "round_candidates",
}
_TOP_KEYS = {
    "version",
    "review_rounds",
    "max_test_rounds",
    "stages",
    "budget",
    "defaults",
    "network",
    "hooks",
    "test_command",
    "setup_env",
    # Rounds on the pull request (issue 11): see `Workflow` below.
    "approval",
    "approval_skip_label",
    "max_followup_rounds",
    "max_ci_fix_attempts",
    "mention",
    "resume_session",
    "allow_submodules",
    "publish",
    # What setup makes stays out of commits; how big a commit may be (issue 21).
    "environment",
    "commit_limit",
    # Interpreters the repository's commands and agents use (issue 21 item 7).
    "toolchains",
    # The repository's memory in prompts, and proposals read back (issue 27).
    "memory",
    # MCP servers the agents may use (issue 27): pipeline.lib.mcp.
    "mcp",
}
# Paths kept out of every commit (with whatever `setup` left untracked): a name without a slash
# matches at any depth, as in .gitignore.
DEFAULT_ENVIRONMENT = (".venv", "venv", "node_modules", "__pycache__", ".pytest_cache", ".tox")
_COMMIT_LIMIT_KEYS = {"files", "bytes"}
# A program name looked up on TAC-X's PATH (pipeline.sandbox.toolchains), never a path.
_TOOLCHAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
MAX_TOOLCHAINS = 16
_ENVIRONMENT_PATH = re.compile(r"[A-Za-z0-9._@+-][A-Za-z0-9._@+/-]*")
APPROVAL_MODES = ("none", "plan", "candidates")
# What the last stage delivers: `pr_creation` (the default) needs a pr_creation stage last;
# `none` runs the listed stages and publishes nothing (no pull request, no result).
PUBLISH_MODES = ("pr_creation", "none")
_NETWORK_KEYS = {"allow"}
# host, *.host, an IPv4 literal or a bracketed IPv6 literal, with an optional :port.
_HOST_ENTRY = re.compile(r"^(?:\*\.)?(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(?::(\d{1,5}))?$|^\[[0-9A-Fa-f:.]+\](?::(\d{1,5}))?$")
_BUDGET_KEYS = {"usd", "tokens", "on_exceed"}
# What a budget does when it is reached: `fail` ends the task (status budget_exceeded); `pause`
# stops the agent the same way, keeps its work, and waits for a person (pipeline.services.pauses).
ON_EXCEED = ("fail", "pause")


class WorkflowError(ValueError):
    """An invalid workflow file. Retrying cannot help.

    ``errors`` lists every problem found (one line each, naming the file, the field and the
    problem); the message is those lines joined, so a user fixes them all in one go."""

    permanent = True

    def __init__(self, message: str, *, errors: list[str] | None = None):
        self.errors = list(errors) if errors else [message]
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class Budget:
    usd: Decimal | None = None
    tokens: int | None = None
    on_exceed: str = "fail"  # one of ON_EXCEED

    @property
    def configured(self) -> bool:
        return self.usd is not None or self.tokens is not None

    def to_json(self) -> dict:
        return {"usd": str(self.usd) if self.usd is not None else None, "tokens": self.tokens, "on_exceed": self.on_exceed}


@dataclass(frozen=True)
class StageConfig:
    name: str
    provider: str
    model: str = ""
    prompt: str = ""
    timeout: int = 1800
    max_turns: int | None = None
    allowed_tools: tuple[str, ...] = ()
    permission_mode: str = ""
    extra_args: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    temperature: float | None = None
    budget: Budget = Budget()
    stall_timeout: int | None = None
    max_attempts: int | None = None
    network_allow: tuple[str, ...] = ()  # hosts this stage's agent may reach besides its model API
    # MCP servers of this stage (added to the workflow's, replacing any of the same name) and
    # the workflow's it turns off (``*``: all of them); `Workflow.mcp_servers` merges them.
    mcp: tuple[mcp_.McpServer, ...] = ()
    mcp_off: tuple[str, ...] = ()
    # Best of N (pipeline.lib.candidates): the candidates of a first pass (empty: one, the
    # ordinary run), the rules that choose one, and how many a PR round of each kind runs.
    candidates: tuple[CandidateSpec, ...] = ()
    select: tuple[str, ...] = DEFAULT_SELECT
    round_candidates: dict[str, int] = field(default_factory=dict)

    @property
    def is_agent(self) -> bool:
        return self.provider != "tacx"

    def candidates_for(self, round_kind: str | None) -> tuple[CandidateSpec, ...]:
        """The candidates of a first pass (round_kind None) or of a PR round of that kind."""
        if round_kind is None:
            return self.candidates
        n = self.round_candidates.get(round_kind, 1)
        return tuple(CandidateSpec(provider=self.provider, model=self.model) for _ in range(n)) if n > 1 else ()

    def to_json(self) -> dict:
        data = asdict(self)
        data["allowed_tools"] = list(self.allowed_tools)
        data["extra_args"] = list(self.extra_args)
        data["network"] = {"allow": list(data.pop("network_allow"))}
        data["budget"] = self.budget.to_json()
        del data["mcp"], data["mcp_off"]
        if self.mcp or self.mcp_off:  # absent otherwise: a workflow without MCP keeps its fingerprint
            data["mcp"] = False if "*" in self.mcp_off else {**{name: False for name in self.mcp_off}, **mcp_json(self.mcp)}
        # Left out when not used, so a workflow without candidates keeps its fingerprint.
        for key in ("candidates", "select", "round_candidates"):
            data.pop(key)
        if self.candidates:
            data["candidates"] = [c.to_json() for c in self.candidates]
        if self.select != DEFAULT_SELECT:
            data["select"] = list(self.select)
        if self.round_candidates:
            data["round_candidates"] = dict(self.round_candidates)
        return data


def mcp_json(servers: tuple[mcp_.McpServer, ...]) -> dict:
    return {s.name: s.to_json() for s in servers}


@dataclass(frozen=True)
class HookConfig:
    """One repository command TAC-X runs itself (a hook or the test command): shell commands run
    in order in the worktree (the first failure stops them), with a time limit for all of them
    together and the hosts it may reach once the sandbox enforces a network allow-list."""

    name: str
    run: tuple[str, ...]
    timeout: int
    network_allow: tuple[str, ...] = ()
    # Plain settings (`env:`), given as they are and never redacted: not for secrets.
    env: tuple[tuple[str, str], ...] = ()
    # The setup cache (setup only, pipeline.setup_cache): on unless `cache: false`; more paths
    # to keep, relative to the hook's HOME; the repository files whose contents key it.
    cache_enabled: bool = True
    cache_paths: tuple[str, ...] = ()
    cache_key: tuple[str, ...] = ()

    def to_json(self) -> dict:
        data = {"run": list(self.run), "timeout": self.timeout, "network": {"allow": list(self.network_allow)}, "env": dict(self.env)}
        if self.name in CACHE_HOOKS:
            data["cache"] = list(self.cache_paths) if self.cache_enabled else False
            data["cache_key"] = list(self.cache_key)
        return data


@dataclass(frozen=True)
class CommitLimit:
    """The most one commit of TAC-X's (or the branch since its base) may add: files added, and
    bytes of the files added or changed."""

    files: int = 200
    bytes: int = 5_000_000

    def to_json(self) -> dict:
        return {"files": self.files, "bytes": self.bytes}


@dataclass(frozen=True)
class Workflow:
    stages: tuple[StageConfig, ...]
    review_rounds: int = 2
    budget: Budget = Budget()
    max_test_rounds: int = 2
    source: str = "default"
    # `plan`: stop after planning until `/tacx approve` (unless the issue carries the skip label).
    approval: str = "none"
    approval_skip_label: str = "rpi-auto-approved"
    # Bounds on rounds started from the pull request: all rounds per PR, CI-fix rounds in a row.
    max_followup_rounds: int = 5
    max_ci_fix_attempts: int = 3
    mention: str = "@tacx"
    # Resume the previous building session in a round where the CLI supports it.
    resume_session: bool = True
    # Commits may add submodules (gitlinks, `.gitmodules`); off by default (pipeline.worktree_reads).
    allow_submodules: bool = False
    network_allow: tuple[str, ...] = ()  # hosts every stage's agent may reach
    hooks: dict[str, HookConfig] = field(default_factory=dict)
    test_command: HookConfig | None = None
    # Names of TAC-X's environment variables handed to `setup` and `test_command` only.
    setup_env: tuple[str, ...] = ()
    publish: str = "pr_creation"
    environment: tuple[str, ...] = DEFAULT_ENVIRONMENT
    commit_limit: CommitLimit = CommitLimit()
    # Program names found on TAC-X's PATH, readable in every sandbox of the task and first on the
    # hooks' PATH (pipeline.sandbox.toolchains).
    toolchains: tuple[str, ...] = ()
    # The repository's memory: accepted entries in every agent prompt, and the last agent stage
    # invited to propose new ones (pipeline.attempt.memory). False turns both off.
    memory: bool = True
    # MCP servers of every agent stage (a stage adds, replaces or turns off: `mcp_servers`).
    mcp: tuple[mcp_.McpServer, ...] = ()

    def mcp_servers(self, stage: StageConfig) -> tuple[mcp_.McpServer, ...]:
        """The MCP servers `stage`'s agent gets: the workflow's less those the stage turns off,
        with the stage's own (none for TAC-X's own stages)."""
        if not stage.is_agent:
            return ()
        return mcp_.merge(self.mcp, stage.mcp, stage.mcp_off)

    def memory_stage(self) -> str:
        """The stage whose agent may propose memory entries: the last agent stage (it has seen
        the plan, the change and the tests of the pass); "" when memory is off or none runs."""
        if not self.memory:
            return ""
        agents = [s.name for s in self.stages if s.is_agent]
        return agents[-1] if agents else ""

    def hook(self, name: str) -> HookConfig | None:
        return self.hooks.get(name)

    def stage(self, name: str) -> StageConfig:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def fingerprint(self) -> str:
        return fingerprint_of(self.to_json())

    def to_json(self) -> dict:
        data = {
            "source": self.source,
            "review_rounds": self.review_rounds,
            "max_test_rounds": self.max_test_rounds,
            "budget": self.budget.to_json(),
            "network": {"allow": list(self.network_allow)},
            "stages": [s.to_json() for s in self.stages],
            "approval": self.approval,
            "approval_skip_label": self.approval_skip_label,
            "max_followup_rounds": self.max_followup_rounds,
            "max_ci_fix_attempts": self.max_ci_fix_attempts,
            "mention": self.mention,
            "resume_session": self.resume_session,
            "allow_submodules": self.allow_submodules,
            "hooks": {name: hook.to_json() for name, hook in self.hooks.items()},
            "test_command": self.test_command.to_json() if self.test_command else None,
            "setup_env": list(self.setup_env),
            "publish": self.publish,
            "environment": list(self.environment),
            "commit_limit": self.commit_limit.to_json(),
            "toolchains": list(self.toolchains),
            "memory": self.memory,
        }
        if self.mcp:  # absent otherwise: a workflow without MCP keeps its fingerprint
            data["mcp"] = mcp_json(self.mcp)
        return data

    def allowed_hosts(self, stage: StageConfig) -> tuple[str, ...]:
        """The workflow's and the stage's network allow-lists together."""
        return tuple(dict.fromkeys([*self.network_allow, *stage.network_allow]))

    @classmethod
    def from_json(cls, data: dict) -> Workflow:
        """Rebuild the snapshot stored on a task (already validated when it was taken)."""
        data = {k: v for k, v in data.items() if k != "source"}
        if "publish" not in data and not any(isinstance(s, dict) and s.get("name") == "pr_creation" for s in data.get("stages") or []):
            data["publish"] = "none"  # a snapshot taken before `publish` existed ran as it was
        return parse_workflow(data, source=data.get("source", "snapshot"))


class _Validator:
    """Checks one document and collects every problem: a field that fails is recorded and
    parsing goes on with the next one (``field``), so the error lists them all at once."""

    def __init__(self, source: str):
        self.source = source
        self.errors: list[str] = []

    def fail(self, where: str, problem: str) -> WorkflowError:
        return WorkflowError(f"{self.source}: {where}: {problem}")

    def field(self, parse: Any, default: Any = None) -> Any:
        """parse() or, when it fails, `default` with the problem recorded."""
        try:
            return parse()
        except WorkflowError as exc:
            self.errors.extend(exc.errors)
            return default

    def raise_if_any(self) -> None:
        if self.errors:
            raise WorkflowError(self.errors[0], errors=self.errors)

    def check_keys(self, data: dict, allowed: set[str], where: str) -> None:
        for key in sorted(set(data) - allowed, key=str):
            self.errors.append(str(self.fail(f"{where}{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")))

    def integer(self, value: Any, where: str, *, minimum: int = 0, maximum: int = MAX_INTEGER) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"must be an integer, got {type(value).__name__} {_short(value)}")
        if value < minimum:
            raise self.fail(where, f"must be >= {minimum}, got {_short(value)}")
        if value > maximum:
            raise self.fail(where, f"must be <= {maximum}, got {_short(value)}")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, got {type(value).__name__}")
        return value

    def string_list(self, value: Any, where: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(where, "must be a list of strings")
        return tuple(value)

    def section(self, value: Any, where: str, keys: set[str], shape: str) -> bool:
        """Whether the optional mapping `value` is there (False for None); raises unless it is a
        mapping (it "must be `shape`") and records each key not in `keys`."""
        if value is None:
            return False
        if not isinstance(value, dict):
            raise self.fail(where, f"must be {shape}")
        self.check_keys(value, keys, f"{where}.")
        return True

    def budget(self, value: Any, where: str) -> Budget:
        if not self.section(value, where, _BUDGET_KEYS, "a mapping with usd and/or tokens (and optionally on_exceed: fail or pause)"):
            return Budget()
        on_exceed = value.get("on_exceed", "fail")
        if on_exceed is None or on_exceed is False:
            on_exceed = "fail"
        if on_exceed not in ON_EXCEED:
            raise self.fail(
                f"{where}.on_exceed",
                f"must be fail (end the task when the budget is reached) or pause (stop, keep the work and wait for a person), got {_short(on_exceed)}",
            )
        usd = value.get("usd")
        if usd is not None:
            if isinstance(usd, bool) or not isinstance(usd, (int, float, str)):
                raise self.fail(f"{where}.usd", "must be a number")
            try:
                usd = Decimal(str(usd))
            except InvalidOperation:
                raise self.fail(f"{where}.usd", f"must be a number, got {_short(usd)}") from None
            if not usd.is_finite():
                raise self.fail(f"{where}.usd", f"must be a finite number, got {usd}")
            if usd >= Decimal(10) ** 6:  # the column holds 12 digits, 6 after the point
                raise self.fail(f"{where}.usd", f"must be < 1000000, got {_short(usd)}")
            if usd < 0:
                raise self.fail(f"{where}.usd", f"must be >= 0, got {usd}")
        tokens = value.get("tokens")
        if tokens is not None:
            tokens = self.integer(tokens, f"{where}.tokens")
        return Budget(usd=usd, tokens=tokens, on_exceed=on_exceed)

    def network(self, value: Any, where: str) -> tuple[str, ...]:
        """``{allow: [host[:port], ...]}``: hosts (``*.example.com`` for subdomains), IP literals."""
        if not self.section(value, where, _NETWORK_KEYS, "a mapping like {allow: [host[:port], ...]}"):
            return ()
        hosts = self.string_list(value.get("allow", []), f"{where}.allow")
        for i, host in enumerate(hosts):
            m = _HOST_ENTRY.match(host)
            port = m and (m.group(1) or m.group(2))
            if not m or (port and not 1 <= int(port) <= 65535):
                raise self.fail(f"{where}.allow[{i}]", f"must be host, *.host or an IP literal with an optional :port, got {host!r}")
        return hosts

    def prompt(self, value: Any, where: str) -> str:
        value = self.text(value, where)
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise self.fail(where, f"invalid template ({exc}); write literal braces as {{{{ and }}}}") from None
        unknown = sorted(n for n in names if n.split(".")[0].split("[")[0] not in PROMPT_FIELDS or n == "")
        if unknown:
            raise self.fail(where, f"unknown placeholder {{{unknown[0]}}} (known: {', '.join(sorted(PROMPT_FIELDS))})")
        return value

    def hook(self, value: Any, name: str, where: str) -> HookConfig | None:
        """A hook: a shell command, a list of them, or {run, timeout, network: {allow}}."""
        if value is None:
            return None
        if isinstance(value, (str, list)):
            value = {"run": value}
        if not isinstance(value, dict):
            raise self.fail(where, "must be a command, a list of commands, or a mapping with run, timeout and network")
        self.check_keys(value, _HOOK_KEYS, f"{where}.")
        run = value.get("run")
        if isinstance(run, str):
            run = [run]
        if not isinstance(run, list) or not run or not all(isinstance(c, str) and c.strip() for c in run):
            raise self.fail(f"{where}.run", "must be a non-empty command or list of non-empty commands")
        if any("\x00" in c for c in run):
            raise self.fail(f"{where}.run", "contains a NUL character")
        timeout = self.integer(value.get("timeout", HOOK_TIMEOUTS[name]), f"{where}.timeout", minimum=1)
        allow: tuple[str, ...] = ()
        network = value.get("network")
        if self.section(network, f"{where}.network", _NETWORK_KEYS, "a mapping with allow: [hosts]"):
            allow = self.string_list(network.get("allow", []), f"{where}.network.allow")
            for i, host in enumerate(allow):
                if not _HOST.fullmatch(host):
                    raise self.fail(f"{where}.network.allow[{i}]", f"must be a host name (optionally *.domain or host:port), got {host!r}")
        env = self.hook_env(value.get("env"), f"{where}.env")
        cache_enabled, cache_paths, cache_key = True, (), ()
        if name not in CACHE_HOOKS:
            for key in ("cache", "cache_key"):
                if key in value:
                    raise self.fail(f"{where}.{key}", "only the setup hook has a cache (hooks.setup.cache)")
        else:
            cache = value.get("cache", True)
            if cache is False or cache is None:
                cache_enabled = False
            elif cache is not True:
                cache_paths = self.relative_paths(cache, f"{where}.cache", what="a path relative to the hook's HOME", home=True)
            cache_key = self.relative_paths(value.get("cache_key", []), f"{where}.cache_key", what="a file of the repository")
        return HookConfig(
            name=name, run=tuple(run), timeout=timeout, network_allow=allow, env=env, cache_enabled=cache_enabled, cache_paths=cache_paths, cache_key=cache_key
        )

    def relative_paths(self, value: Any, where: str, *, what: str, home: bool = False) -> tuple[str, ...]:
        """Relative paths (``requirements.txt``, ``.cache/pre-commit``): no ``..``, no globs;
        under HOME (`home`) not ``tmp`` (the hook's TMPDIR)."""
        if value is True or value is False:
            raise self.fail(where, f"must be a list of paths, got {_short(value)}")
        paths = self.string_list(value, where)
        if len(paths) > MAX_CACHE_PATHS:
            raise self.fail(where, f"lists {len(paths)} paths; at most {MAX_CACHE_PATHS}")
        for i, path in enumerate(paths):
            parts = path.strip("/").split("/")
            if path.startswith("/") or not _ENVIRONMENT_PATH.fullmatch(path.strip("/")) or any(part in ("", ".", "..", ".git") for part in parts):
                raise self.fail(f"{where}[{i}]", f"must be {what} (letters, digits, . _ - @ + /; not absolute, no .., no .git), got {_short(path)}")
            if home and parts[0] == "tmp":
                raise self.fail(f"{where}[{i}]", f"tmp is the hook's TMPDIR, emptied every run, got {_short(path)}")
        return tuple(dict.fromkeys(p.strip("/") for p in paths))

    def hook_env(self, value: Any, where: str) -> tuple[tuple[str, str], ...]:
        """``{NAME: value}``: plain settings for one hook (strings, numbers or booleans)."""
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise self.fail(where, "must be a mapping of NAME: value")
        out = []
        for name, val in value.items():
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                raise self.fail(f"{where}.{name}", "must be an environment variable name")
            if name in FORBIDDEN_SETUP_ENV or name.startswith("TACX_"):
                raise self.fail(f"{where}.{name}", "is TAC-X's own and cannot be set by the workflow")
            if isinstance(val, bool):
                val = "1" if val else "0"
            if not isinstance(val, (str, int, float)) or "\x00" in str(val):
                raise self.fail(f"{where}.{name}", f"must be a string or a number, got {_short(val)}")
            out.append((name, str(val)))
        return tuple(out)

    def environment(self, value: Any, where: str) -> tuple[str, ...]:
        """Paths relative to the repository (``.venv``, ``build/out``); no ``..``, no globs."""
        paths = self.string_list(value, where)
        for i, path in enumerate(paths):
            parts = path.strip("/").split("/")
            if not _ENVIRONMENT_PATH.fullmatch(path.strip("/")) or any(part in ("", ".", "..", ".git") for part in parts):
                raise self.fail(f"{where}[{i}]", f"must be a path inside the repository (letters, digits, . _ - @ + /; no .., no .git), got {_short(path)}")
        return tuple(p.strip("/") for p in paths)

    def commit_limit(self, value: Any, where: str) -> CommitLimit:
        if not self.section(value, where, _COMMIT_LIMIT_KEYS, "a mapping like {files: 200, bytes: 5000000}"):
            return CommitLimit()
        default = CommitLimit()
        return CommitLimit(
            files=self.integer(value.get("files", default.files), f"{where}.files", minimum=1),
            bytes=self.integer(value.get("bytes", default.bytes), f"{where}.bytes", minimum=1),
        )

    def toolchains(self, value: Any, where: str) -> tuple[str, ...]:
        """Program names (``python3.11``, ``node``): looked up on TAC-X's PATH, never paths."""
        names = self.string_list(value, where)
        if len(names) > MAX_TOOLCHAINS:
            raise self.fail(where, f"lists {len(names)} programs; at most {MAX_TOOLCHAINS}")
        for i, name in enumerate(names):
            if not _TOOLCHAIN_NAME.fullmatch(name):
                raise self.fail(
                    f"{where}[{i}]",
                    f"must be a program name found on TAC-X's PATH (letters, digits, . _ + -; no path), got {_short(name)}",
                )
        return tuple(dict.fromkeys(names))

    def mcp(self, value: Any, where: str, *, stage: bool = False) -> tuple[tuple[mcp_.McpServer, ...], tuple[str, ...]]:
        """MCP servers (pipeline.lib.mcp): (servers, names a stage turns off)."""
        return mcp_.parse_servers(value, where, self.fail, stage=stage)

    def setup_env(self, value: Any, where: str) -> tuple[str, ...]:
        names = self.string_list(value, where)
        for i, name in enumerate(names):
            if not _ENV_NAME.fullmatch(name):
                raise self.fail(f"{where}[{i}]", f"must be an environment variable name, got {name!r}")
            if name in FORBIDDEN_SETUP_ENV:
                raise self.fail(f"{where}[{i}]", f"{name} is TAC-X's own credential and is never handed to repository commands")
        return names


def parse_workflow(data: Any, *, source: str, defaults: Workflow | None = None) -> Workflow:
    """Validate a parsed YAML document. Stages named like a default stage inherit its settings."""
    v = _Validator(source)
    if not isinstance(data, dict):
        raise v.fail("(top level)", f"must be a mapping, got {type(data).__name__}")
    v.check_keys(data, _TOP_KEYS, "")
    if "version" in data and data["version"] != 1:
        v.errors.append(str(v.fail("version", f"unsupported version {_short(data['version'])} (only 1)")))
    review_rounds = v.field(
        lambda: v.integer(data.get("review_rounds", defaults.review_rounds if defaults else 2), "review_rounds", minimum=1, maximum=MAX_REVIEW_ROUNDS), 1
    )
    max_test_rounds = v.field(
        lambda: v.integer(data.get("max_test_rounds", defaults.max_test_rounds if defaults else 2), "max_test_rounds", minimum=1, maximum=MAX_REVIEW_ROUNDS), 1
    )
    default_budget = defaults.budget if defaults else Budget()
    budget = v.field(lambda: v.budget(data.get("budget"), "budget"), default_budget) if "budget" in data else default_budget

    raw_stages = data.get("stages")
    stages: tuple[StageConfig, ...] = ()
    if raw_stages is None:
        if defaults is None:
            v.errors.append(str(v.fail("stages", "is required")))
        else:
            stages = defaults.stages
    elif not isinstance(raw_stages, list) or not raw_stages:
        v.errors.append(str(v.fail("stages", "must be a non-empty list")))
    else:
        parsed = [v.field(lambda raw=raw, i=i: _parse_stage(v, raw, i, defaults)) for i, raw in enumerate(raw_stages)]
        stages = tuple(stage for stage in parsed if stage is not None)
    # Checks across stages only make sense when every stage could be read.
    names = [s.name for s in stages] if not v.errors else []
    for name in sorted(set(names)):
        if names.count(name) > 1:
            v.errors.append(str(v.fail("stages", f"stage name {name!r} appears twice")))
    if "pr_creation" in names and names[-1] != "pr_creation":
        v.errors.append(str(v.fail("stages", "pr_creation must be the last stage")))
    publish = v.field(lambda: _publish_mode(v, data, defaults), "pr_creation")
    if names and publish == "pr_creation" and "pr_creation" not in names:
        v.errors.append(
            str(
                v.fail(
                    "stages",
                    "has no pr_creation stage, so the branch would never be published as a result; add "
                    "`- name: pr_creation` as the last stage, or set `publish: none` at the top level to run "
                    "these stages without publishing",
                )
            )
        )
    if names and publish == "none" and "pr_creation" in names:
        what = "the stages list pr_creation" if isinstance(raw_stages, list) else "the default stages (inherited: no `stages` given) end with pr_creation"
        v.errors.append(str(v.fail("publish", f"is none, but {what}; remove one of the two")))
    for stage in stages:
        if names and stage.candidates and "judge" in stage.select and "reviewing" not in names and stage.select != DEFAULT_SELECT:
            v.errors.append(
                str(
                    v.fail(
                        f"stages ({stage.name}).select",
                        "has judge, but the judge is the reviewing stage's provider and there is no reviewing stage",
                    )
                )
            )
    if "reviewing" in names and "building" not in names:
        v.errors.append(str(v.fail("stages", "a reviewing stage needs a building stage to send changes back to")))
    if "network" in data:
        network_allow = v.field(lambda: v.network(data.get("network"), "network"), ())
    else:
        network_allow = defaults.network_allow if defaults else ()

    hooks_raw = data.get("hooks")
    hooks: dict[str, HookConfig] = {}
    if hooks_raw is not None:
        if not isinstance(hooks_raw, dict):
            v.errors.append(str(v.fail("hooks", f"must be a mapping with any of: {', '.join(HOOK_NAMES)}")))
        else:
            v.check_keys(hooks_raw, set(HOOK_NAMES), "hooks.")
            for name in HOOK_NAMES:
                hook = v.field(lambda name=name: v.hook(hooks_raw.get(name), name, f"hooks.{name}"))
                if hook is not None:
                    hooks[name] = hook
    test_command = v.field(lambda: v.hook(data.get("test_command"), "test_command", "test_command"))
    if test_command is not None and names and "building" not in names:
        v.errors.append(str(v.fail("test_command", "needs a building stage to test (and to send failures back to)")))
    setup_env = v.field(lambda: v.setup_env(data.get("setup_env", []), "setup_env"), ())

    # Rounds on the pull request (issue 11).
    def inherited(key: str, default: Any) -> Any:
        return data.get(key, getattr(defaults, key) if defaults else default)

    def approval_mode() -> str:
        approval = inherited("approval", "none")
        approval = "none" if approval is None or approval is False else approval
        if approval not in APPROVAL_MODES:
            raise v.fail("approval", f"must be one of {', '.join(APPROVAL_MODES)}, got {_short(approval)}")
        return approval

    def mention_text() -> str:
        mention = v.text(inherited("mention", "@tacx"), "mention").strip()
        if not mention.startswith("@") or len(mention) < 2 or any(c.isspace() for c in mention):
            raise v.fail("mention", f"must look like @name, got {_short(mention)}")
        return mention

    def resume_flag() -> bool:
        resume = inherited("resume_session", True)
        if not isinstance(resume, bool):
            raise v.fail("resume_session", f"must be true or false, got {_short(resume)}")
        return resume

    def memory_flag() -> bool:
        memory = inherited("memory", True)
        if not isinstance(memory, bool):
            raise v.fail(
                "memory",
                "must be true or false (false turns the repository's memory off for this workflow: no entries in the "
                f"prompts, no proposals read back), got {_short(memory)}",
            )
        return memory

    def submodules_flag() -> bool:
        allow = inherited("allow_submodules", False)
        if not isinstance(allow, bool):
            raise v.fail("allow_submodules", f"must be true or false, got {_short(allow)}")
        return allow

    approval = v.field(approval_mode, "none")
    approval_skip_label = v.field(lambda: v.text(inherited("approval_skip_label", "rpi-auto-approved"), "approval_skip_label"), "")
    max_followup_rounds = v.field(lambda: v.integer(inherited("max_followup_rounds", 5), "max_followup_rounds"), 0)
    max_ci_fix_attempts = v.field(lambda: v.integer(inherited("max_ci_fix_attempts", 3), "max_ci_fix_attempts"), 0)
    mention = v.field(mention_text, "@tacx")
    resume = v.field(resume_flag, True)
    allow_submodules = v.field(submodules_flag, False)
    memory = v.field(memory_flag, True)
    environment = v.field(lambda: v.environment(inherited("environment", DEFAULT_ENVIRONMENT), "environment"), DEFAULT_ENVIRONMENT)
    commit_limit = v.field(lambda: v.commit_limit(data["commit_limit"], "commit_limit") if "commit_limit" in data else (defaults.commit_limit if defaults else CommitLimit()), CommitLimit())
    toolchains = v.field(lambda: v.toolchains(inherited("toolchains", ()), "toolchains"), ())
    if "mcp" in data:
        mcp_servers = v.field(lambda: v.mcp(data["mcp"], "mcp")[0], ())
    else:
        mcp_servers = defaults.mcp if defaults else ()
    if approval == "candidates" and names and not any(s.candidates or s.round_candidates for s in stages):
        v.errors.append(str(v.fail("approval", "is candidates, but no stage runs candidates (give the building stage `candidates: N`)")))
    for index, stage in enumerate(stages):
        # A budget that pauses has one open pause per task; several candidates reaching it together
        # would end as budget stops instead (README, "Best of N"): refused until that has a rule.
        if (stage.candidates or stage.round_candidates) and "pause" in (budget.on_exceed, stage.budget.on_exceed):
            where = f"stages[{index}] ({stage.name}).budget.on_exceed" if stage.budget.on_exceed == "pause" else "budget.on_exceed"
            v.errors.append(
                str(v.fail(where, f"is pause, but stage {stage.name} runs candidates: use on_exceed: fail with candidates (a pause under candidates is not supported yet)"))
            )
    v.raise_if_any()
    workflow = Workflow(
        stages=stages,
        review_rounds=review_rounds,
        max_test_rounds=max_test_rounds,
        budget=budget,
        source=source,
        approval=approval,
        approval_skip_label=approval_skip_label,
        max_followup_rounds=max_followup_rounds,
        max_ci_fix_attempts=max_ci_fix_attempts,
        mention=mention,
        resume_session=resume,
        allow_submodules=allow_submodules,
        hooks=hooks,
        test_command=test_command,
        setup_env=setup_env,
        network_allow=network_allow,
        publish=publish,
        environment=environment,
        commit_limit=commit_limit,
        toolchains=toolchains,
        memory=memory,
        mcp=mcp_servers,
    )
    _check_mcp(v, workflow)
    v.raise_if_any()
    return workflow


def _check_mcp(v: _Validator, workflow: Workflow) -> None:
    """Each agent stage's MCP servers: its provider can use them, and each HTTP server's host is
    on the stage's egress allow-list (the sandbox would refuse it: refused now, not at run time)."""
    for index, stage in enumerate(workflow.stages):
        servers = workflow.mcp_servers(stage)
        if not servers:
            continue
        where = f"stages[{index}] ({stage.name})"
        if stage.provider not in MCP_PROVIDERS:
            names = ", ".join(s.name for s in servers)
            fix = "; turn the workflow's off for this stage with `mcp: false`" if any(s not in stage.mcp for s in servers) else ""
            problem = f"the {stage.provider} provider has no MCP support, so it cannot use the MCP servers {names}{fix}"
            v.errors.append(str(v.fail(f"{where}.mcp", f"{problem} (MCP works with: {', '.join(MCP_PROVIDERS)})")))
            continue
        allow = workflow.allowed_hosts(stage)
        for server in servers:
            if server.transport != mcp_.HTTP or mcp_.host_allowed(server.url, allow):
                continue
            host, port = mcp_.url_host(server.url)
            declared = f"{where}.mcp.{server.name}.url" if server in stage.mcp else f"mcp.{server.name}.url"
            problem = (
                f"{host}:{port} is not on the egress allow-list of stage {stage.name}, so its sandbox would refuse the "
                f"connection; add {host}:{port} to network.allow (or to that stage's network.allow)"
            )
            v.errors.append(str(v.fail(declared, problem)))


def _publish_mode(v: _Validator, data: dict, defaults: Workflow | None) -> str:
    publish = data.get("publish", defaults.publish if defaults else "pr_creation")
    if publish is None or publish is False:
        publish = "none"
    if publish not in PUBLISH_MODES:
        raise v.fail("publish", f"must be one of {', '.join(PUBLISH_MODES)}, got {_short(publish)}")
    return publish


def _parse_stage(v: _Validator, raw: Any, index: int, defaults: Workflow | None) -> StageConfig | None:
    """One stage, or None when it has problems (recorded in ``v.errors``); raises only when the
    stage cannot be read at all (not a mapping, no usable name or provider)."""
    where = f"stages[{index}]"
    if not isinstance(raw, dict):
        raise v.fail(where, "must be a mapping")
    name = v.text(raw.get("name", ""), f"{where}.name").strip()
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise v.fail(f"{where}.name", f"must be a non-empty word (letters, digits, _ and -), got {name!r}")
    where = f"stages[{index}] ({name})"
    v.check_keys(raw, _STAGE_KEYS, f"{where}.")
    base: dict[str, Any] = {}
    if defaults is not None:
        try:
            base = dict(defaults.stage(name).__dict__)
        except KeyError:
            pass
    provider = raw.get("provider", base.get("provider"))
    if base and provider != base.get("provider"):
        # Another CLI: the default stage's model, tools, permission mode, arguments and options
        # are the other CLI's words (Claude's "acceptEdits" means nothing to gemini).
        base = {k: v for k, v in base.items() if k not in _PROVIDER_SPECIFIC_KEYS}
    if name == "pr_creation":
        # Done by TAC-X itself: it holds the push token, the agent never does.
        if provider not in (None, "tacx"):
            raise v.fail(f"{where}.provider", "pr_creation is done by TAC-X; use provider: tacx or omit it")
        if "mcp" in raw:
            raise v.fail(f"{where}.mcp", "pr_creation is done by TAC-X, not an agent: it uses no MCP servers")
        return StageConfig(name=name, provider="tacx", timeout=v.integer(raw.get("timeout", 300), f"{where}.timeout", minimum=1))
    if provider is None:
        raise v.fail(f"{where}.provider", f"is required (one of: {', '.join(AGENT_PROVIDERS)})")
    if provider not in AGENT_PROVIDERS:
        raise v.fail(f"{where}.provider", f"unknown provider {provider!r} (known: {', '.join(AGENT_PROVIDERS)})")

    if base and provider != base.get("provider"):
        # The default stage's model belongs to its provider: a `command` (or codex) stage must not
        # show, price or count itself under the inherited claude model.
        base.pop("model", None)

    def pick(key: str, default: Any = None) -> Any:
        return raw.get(key, base.get(key, default))

    max_turns = pick("max_turns")
    options = pick("options", {}) or {}
    if not isinstance(options, dict):
        v.errors.append(str(v.fail(f"{where}.options", "must be a mapping")))
        options = {}
    elif provider == "command" and not options.get("argv"):
        v.errors.append(str(v.fail(f"{where}.options.argv", "is required for the command provider (a list of arguments)")))
    temperature = pick("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2):
        v.errors.append(str(v.fail(f"{where}.temperature", f"must be a number between 0 and 2, got {temperature!r}")))
    stall = pick("stall_timeout")
    max_attempts = pick("max_attempts")
    budget_raw = raw.get("budget")
    f = v.field
    errors_before = len(v.errors)
    if "mcp" in raw:
        mcp_servers, mcp_off = f(lambda: v.mcp(raw["mcp"], f"{where}.mcp", stage=True), ((), ()))
    else:
        mcp_servers, mcp_off = tuple(base.get("mcp", ())), tuple(base.get("mcp_off", ()))
    config = StageConfig(
        name=name,
        provider=provider,
        model=f(lambda: v.text(pick("model", ""), f"{where}.model"), ""),
        prompt=f(lambda: v.prompt(pick("prompt", "{issue_title}\n\n{issue_body}"), f"{where}.prompt"), ""),
        timeout=f(lambda: v.integer(pick("timeout", 1800), f"{where}.timeout", minimum=1), 1),
        max_turns=None if max_turns is None else f(lambda: v.integer(max_turns, f"{where}.max_turns", minimum=1)),
        allowed_tools=f(lambda: v.string_list(pick("allowed_tools", []), f"{where}.allowed_tools"), ()),
        permission_mode=f(lambda: v.text(pick("permission_mode", ""), f"{where}.permission_mode"), ""),
        extra_args=f(lambda: v.string_list(pick("extra_args", []), f"{where}.extra_args"), ()),
        options=options,
        temperature=temperature,
        budget=f(lambda: v.budget(budget_raw, f"{where}.budget"), Budget()) if budget_raw is not None else base.get("budget", Budget()),
        stall_timeout=None if stall is None else f(lambda: v.integer(stall, f"{where}.stall_timeout", minimum=1)),
        max_attempts=None if max_attempts is None else f(lambda: v.integer(max_attempts, f"{where}.max_attempts", minimum=1, maximum=MAX_STAGE_ATTEMPTS)),
        network_allow=f(lambda: v.network(raw["network"], f"{where}.network"), ()) if "network" in raw else tuple(base.get("network_allow", ())),
        mcp=mcp_servers,
        mcp_off=mcp_off,
    )
    config = _stage_candidates(v, config, raw, base, where)
    return config if len(v.errors) == errors_before else None


def _stage_candidates(v: _Validator, config: StageConfig, raw: dict, base: dict, where: str) -> StageConfig:
    """`candidates:`, `select:` and `round_candidates:` of one stage (pipeline.lib.candidates)."""
    given = [key for key in ("candidates", "select", "round_candidates") if key in raw]
    if given and config.name not in CANDIDATE_STAGES:
        v.errors.append(
            str(
                v.fail(
                    f"{where}.{given[0]}",
                    f"only the {' or '.join(CANDIDATE_STAGES)} stage may run candidates (its change is what the tests and the judge compare)",
                )
            )
        )
        return config
    raw_specs = raw["candidates"] if "candidates" in raw else [c.to_json() for c in base.get("candidates", ())] or None
    specs, problems = parse_candidates(
        raw_specs,
        where=f"{v.source}: {where}.candidates",
        provider=config.provider,
        model=config.model,
        providers=AGENT_PROVIDERS,
    )
    select, more = parse_select(raw.get("select", list(base.get("select", DEFAULT_SELECT))), where=f"{v.source}: {where}.select")
    rounds, most = parse_round_candidates(
        raw.get("round_candidates", base.get("round_candidates") or None), where=f"{v.source}: {where}.round_candidates"
    )
    v.errors.extend([*problems, *more, *most])
    return replace(config, candidates=specs, select=select, round_candidates=rounds)


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (sys.get_int_max_str_digits)
        return f"<a {type(value).__name__} too long to show>"
    return text if len(text) <= limit else text[:limit] + "..."


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (a few hundred bytes of nested aliases expand to
    billions of nodes) and nesting deeper than MAX_WORKFLOW_DEPTH (the composer recurses)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(None, None, "aliases (*name) are not allowed in a workflow file", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_WORKFLOW_DEPTH:
                event = self.peek_event()
                raise yaml.MarkedYAMLError(None, None, f"nested deeper than {MAX_WORKFLOW_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _load_yaml(text: str, source: str) -> Any:
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(parse)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise WorkflowError(f"{source}: {where}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()


def fingerprint_of(snapshot: dict) -> str:
    """sha256 of a workflow as run (`Workflow.to_json()`, the snapshot a task keeps), without
    where it was read from: its stages, prompts, models and limits. One workflow, one
    fingerprint, whether an evaluation or a real task ran it."""
    data = {k: v for k, v in snapshot.items() if k != "source"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def default_workflow() -> Workflow:
    return parse_workflow(_load_yaml(DEFAULT_WORKFLOW_FILE.read_text(), "default workflow"), source="default workflow")


def load_workflow_text(text: str | bytes | None, *, source: str = WORKFLOW_PATH) -> Workflow:
    """The repository's workflow file (its text or bytes, None if absent) over the default.

    Every problem with the file raises WorkflowError, whatever it is: the dispatcher fails the
    task with the message instead of retrying a file that cannot get better."""
    default = default_workflow()
    if text is None:
        return default
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > MAX_WORKFLOW_BYTES:
        raise WorkflowError(f"{source}: (file): {size} bytes; the limit is {MAX_WORKFLOW_BYTES}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkflowError(f"{source}: (file): not UTF-8 text (byte {exc.start}: {text[exc.start:exc.start + 1]!r})") from None
    try:
        data = _load_yaml(text, source)
        if data is None:
            raise WorkflowError(f"{source}: (top level): the file is empty")
        return parse_workflow(data, source=source, defaults=default)
    except WorkflowError:
        raise
    except (RecursionError, MemoryError, ArithmeticError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # A case the validator does not name yet: still the file's fault, still final.
        raise WorkflowError(f"{source}: (file): cannot be used: {type(exc).__name__}: {_short(str(exc), 200)}") from None


def load_workflow(repo_dir: str | Path) -> Workflow:
    """The workflow of a checked-out repository."""
    path = Path(repo_dir) / WORKFLOW_PATH
    return load_workflow_text(path.read_bytes() if path.is_file() else None)
