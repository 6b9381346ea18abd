"""Workflow configuration: which stages run, with which agent, prompt, limits and budgets.

A repository may carry `.tac/workflow.yaml`; otherwise the bundled default applies. The file is
validated completely on load; any problem raises `WorkflowError` whose message names the file, the
field and the problem, and the task fails before any agent starts.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

WORKFLOW_PATH = ".tac/workflow.yaml"
DEFAULT_WORKFLOW_FILE = Path(__file__).with_name("default_workflow.yaml")

AGENT_PROVIDERS = ("claude", "codex", "gemini", "qwen", "opencode", "command")
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
    }
)

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
}
_TOP_KEYS = {"version", "review_rounds", "stages", "budget", "defaults"}
_BUDGET_KEYS = {"usd", "tokens"}


class WorkflowError(ValueError):
    """An invalid workflow file. Retrying cannot help."""

    permanent = True


@dataclass(frozen=True)
class Budget:
    usd: Decimal | None = None
    tokens: int | None = None

    def to_json(self) -> dict:
        return {"usd": str(self.usd) if self.usd is not None else None, "tokens": self.tokens}


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

    @property
    def is_agent(self) -> bool:
        return self.provider != "tacx"

    def to_json(self) -> dict:
        data = asdict(self)
        data["allowed_tools"] = list(self.allowed_tools)
        data["extra_args"] = list(self.extra_args)
        data["budget"] = self.budget.to_json()
        return data


@dataclass(frozen=True)
class Workflow:
    stages: tuple[StageConfig, ...]
    review_rounds: int = 2
    budget: Budget = Budget()
    source: str = "default"

    def stage(self, name: str) -> StageConfig:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "review_rounds": self.review_rounds,
            "budget": self.budget.to_json(),
            "stages": [s.to_json() for s in self.stages],
        }

    @classmethod
    def from_json(cls, data: dict) -> Workflow:
        """Rebuild the snapshot stored on a task (already validated when it was taken)."""
        return parse_workflow(
            {k: v for k, v in data.items() if k != "source"}, source=data.get("source", "snapshot")
        )


class _Validator:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str) -> WorkflowError:
        return WorkflowError(f"{self.source}: {where}: {problem}")

    def check_keys(self, data: dict, allowed: set[str], where: str) -> None:
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise self.fail(f"{where}{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def integer(self, value: Any, where: str, *, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"must be an integer, got {type(value).__name__} {value!r}")
        if value < minimum:
            raise self.fail(where, f"must be >= {minimum}, got {value}")
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

    def budget(self, value: Any, where: str) -> Budget:
        if value is None:
            return Budget()
        if not isinstance(value, dict):
            raise self.fail(where, "must be a mapping with usd and/or tokens")
        self.check_keys(value, _BUDGET_KEYS, f"{where}.")
        usd = value.get("usd")
        if usd is not None:
            if isinstance(usd, bool) or not isinstance(usd, (int, float, str)):
                raise self.fail(f"{where}.usd", "must be a number")
            try:
                usd = Decimal(str(usd))
            except InvalidOperation:
                raise self.fail(f"{where}.usd", f"must be a number, got {usd!r}") from None
            if usd < 0:
                raise self.fail(f"{where}.usd", f"must be >= 0, got {usd}")
        tokens = value.get("tokens")
        if tokens is not None:
            tokens = self.integer(tokens, f"{where}.tokens")
        return Budget(usd=usd, tokens=tokens)

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


def parse_workflow(data: Any, *, source: str, defaults: Workflow | None = None) -> Workflow:
    """Validate a parsed YAML document. Stages named like a default stage inherit its settings."""
    v = _Validator(source)
    if not isinstance(data, dict):
        raise v.fail("(top level)", f"must be a mapping, got {type(data).__name__}")
    v.check_keys(data, _TOP_KEYS, "")
    if "version" in data and data["version"] != 1:
        raise v.fail("version", f"unsupported version {data['version']!r} (only 1)")
    review_rounds = v.integer(data.get("review_rounds", defaults.review_rounds if defaults else 2), "review_rounds", minimum=1)
    budget = v.budget(data.get("budget"), "budget") if "budget" in data else (defaults.budget if defaults else Budget())

    raw_stages = data.get("stages")
    if raw_stages is None:
        if defaults is None:
            raise v.fail("stages", "is required")
        stages = defaults.stages
    else:
        if not isinstance(raw_stages, list) or not raw_stages:
            raise v.fail("stages", "must be a non-empty list")
        stages = tuple(_parse_stage(v, raw, i, defaults) for i, raw in enumerate(raw_stages))
    names = [s.name for s in stages]
    for name in names:
        if names.count(name) > 1:
            raise v.fail("stages", f"stage name {name!r} appears twice")
    if "pr_creation" in names and names[-1] != "pr_creation":
        raise v.fail("stages", "pr_creation must be the last stage")
    if "reviewing" in names and "building" not in names:
        raise v.fail("stages", "a reviewing stage needs a building stage to send changes back to")
    return Workflow(stages=stages, review_rounds=review_rounds, budget=budget, source=source)


def _parse_stage(v: _Validator, raw: Any, index: int, defaults: Workflow | None) -> StageConfig:
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
        return StageConfig(name=name, provider="tacx", timeout=v.integer(raw.get("timeout", 300), f"{where}.timeout", minimum=1))
    if provider is None:
        raise v.fail(f"{where}.provider", f"is required (one of: {', '.join(AGENT_PROVIDERS)})")
    if provider not in AGENT_PROVIDERS:
        raise v.fail(f"{where}.provider", f"unknown provider {provider!r} (known: {', '.join(AGENT_PROVIDERS)})")

    def pick(key: str, default: Any = None) -> Any:
        return raw.get(key, base.get(key, default))

    max_turns = pick("max_turns")
    options = pick("options", {}) or {}
    if not isinstance(options, dict):
        raise v.fail(f"{where}.options", "must be a mapping")
    if provider == "command" and not options.get("argv"):
        raise v.fail(f"{where}.options.argv", "is required for the command provider (a list of arguments)")
    temperature = pick("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2):
        raise v.fail(f"{where}.temperature", f"must be a number between 0 and 2, got {temperature!r}")
    stall = pick("stall_timeout")
    max_attempts = pick("max_attempts")
    budget_raw = raw.get("budget")
    return StageConfig(
        name=name,
        provider=provider,
        model=v.text(pick("model", ""), f"{where}.model"),
        prompt=v.prompt(pick("prompt", "{issue_title}\n\n{issue_body}"), f"{where}.prompt"),
        timeout=v.integer(pick("timeout", 1800), f"{where}.timeout", minimum=1),
        max_turns=None if max_turns is None else v.integer(max_turns, f"{where}.max_turns", minimum=1),
        allowed_tools=v.string_list(pick("allowed_tools", []), f"{where}.allowed_tools"),
        permission_mode=v.text(pick("permission_mode", ""), f"{where}.permission_mode"),
        extra_args=v.string_list(pick("extra_args", []), f"{where}.extra_args"),
        options=options,
        temperature=temperature,
        budget=v.budget(budget_raw, f"{where}.budget") if budget_raw is not None else base.get("budget", Budget()),
        stall_timeout=None if stall is None else v.integer(stall, f"{where}.stall_timeout", minimum=1),
        max_attempts=None if max_attempts is None else v.integer(max_attempts, f"{where}.max_attempts", minimum=1),
    )


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(parse)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise WorkflowError(f"{source}: {where}: invalid YAML: {problem}") from None


def default_workflow() -> Workflow:
    return parse_workflow(_load_yaml(DEFAULT_WORKFLOW_FILE.read_text(), "default workflow"), source="default workflow")


def load_workflow_text(text: str | None, *, source: str = WORKFLOW_PATH) -> Workflow:
    """The repository's workflow file (its text, None if absent) over the default."""
    default = default_workflow()
    if text is None:
        return default
    data = _load_yaml(text, source)
    if data is None:
        raise WorkflowError(f"{source}: (top level): the file is empty")
    return parse_workflow(data, source=source, defaults=default)


def load_workflow(repo_dir: str | Path) -> Workflow:
    """The workflow of a checked-out repository."""
    path = Path(repo_dir) / WORKFLOW_PATH
    return load_workflow_text(path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None)
