"""Record real CLI transcripts against the scripted model server (fixtures for parser tests).

``python -m harness.recording [OUT_DIR]`` (default ``tests/fixtures/recorded``)
runs each scenario below with the installed CLIs and writes ``<cli>-<version>.<name>.jsonl``
(the CLI's stdout, unchanged) plus ``manifest.json`` describing every file: CLI, version, the
script used, argv with ``{url}``/``{repo}`` placeholders, exit code and a note. It refuses to
write a transcript that contains the API key value it passed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cli_runs import (
    BIN_DIR,
    CLI_VERSIONS,
    DUMMY_API_KEY,
    PROJECT_DIR,
    claude_argv,
    claude_env,
    codex_argv,
    codex_env,
    make_git_repo,
    provider_command,
    run_agent,
)
from harness.modelserver.server import ScriptedModelServer

SCRIPTS_DIR = PROJECT_DIR / "tests" / "scripts"
DEFAULT_OUT_DIR = PROJECT_DIR / "tests" / "fixtures" / "recorded"


@dataclass(frozen=True)
class Scenario:
    """One recording: which CLI, which script, how to build argv/env, what it shows."""

    name: str
    cli: str
    script: str
    note: str
    argv: Callable[[str, Path], list[str]] | None = None
    extra_env: dict[str, str] | None = None
    timeout: float = 60
    # gemini / qwen / opencode: argv and environment come from the provider itself.
    model: str = ""
    max_turns: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


PROVIDER_PROMPT = "TACX-STAGE: planning\nWrite the plan."
MODELS = {"gemini": "gemini-2.5-pro", "qwen": "qwen3-coder-plus", "opencode": "glm-4.6"}


def provider_scenarios() -> tuple[Scenario, ...]:
    """The same four situations for each CLI driven through its provider."""
    found = []
    for cli, model in MODELS.items():
        found += [
            Scenario(name="write-bash-success", cli=cli, script="write-bash-reasoning.yaml", model=model, note="The CLI's file tool writes plan.md, its shell tool commits it, then a final text. Exit 0; the usage equals the script's sums."),
            Scenario(name="auth-401", cli=cli, script="auth-401.yaml", model=model, note="HTTP 401 on every request: not retried, the run fails at once."),
            Scenario(name="rate-limit-429", cli=cli, script="rate-limit-429.yaml", model=model, options={"max_attempts": 2} if cli == "gemini" else {"max_retries": 0} if cli == "qwen" else {}, note="HTTP 429 with Retry-After 0.1 s on every request: the CLI's bounded retries, then failure."),
        ]
        if cli != "opencode":  # opencode has no turn limit of its own (TAC-X's parser stops it)
            found.append(Scenario(name="turn-limit", cli=cli, script="loop.yaml", model=model, max_turns=2, note="Turn limit 2 while the model keeps calling the shell: exit 53."))
    return tuple(found)


SCENARIOS = (
    Scenario(
        name="write-bash-success",
        cli="claude",
        script="claude-write-bash.yaml",
        note="Write plan.md + Bash git commit, then a final text. Exit 0; result.usage equals "
        "the sums of the script's turns.",
        argv=lambda url, repo: claude_argv("TACX-STAGE: planning\nWrite the plan."),
    ),
    Scenario(
        name="max-turns",
        cli="claude",
        script="max-turns.yaml",
        note="--max-turns 1: result subtype error_max_turns, is_error true. Exit 1.",
        argv=lambda url, repo: claude_argv("Keep going.", max_turns=1),
    ),
    Scenario(
        name="auth-401-no-retries",
        cli="claude",
        script="auth-401.yaml",
        note="HTTP 401 with CLAUDE_CODE_MAX_RETRIES=0: synthetic assistant message, result "
        "is_error true with api_error_status 401. Exit 1.",
        argv=lambda url, repo: claude_argv("Anything."),
        extra_env={"CLAUDE_CODE_MAX_RETRIES": "0"},
    ),
    Scenario(
        name="shell-success",
        cli="codex",
        script="codex-shell.yaml",
        note="exec_command creates a file, then a final text. Exit 0; turn.completed.usage is "
        "the sum over both responses (input includes cached and cache-write tokens).",
        argv=lambda url, repo: codex_argv(url, repo, "Create the file."),
    ),
    Scenario(
        name="auth-401",
        cli="codex",
        script="auth-401.yaml",
        note="HTTP 401 on every request: five 'Reconnecting... n/5' error lines, then error + "
        "turn.failed. Exit 1 after about 6 s.",
        argv=lambda url, repo: codex_argv(url, repo, "Anything."),
    ),
)


def record(scenario: Scenario, out_dir: Path, work_dir: Path) -> dict[str, object]:
    """Run one scenario and write its transcript; returns its manifest entry."""
    version = CLI_VERSIONS[scenario.cli]
    filename = f"{scenario.cli}-{version}.{scenario.name}.jsonl"
    base = work_dir / f"{scenario.cli}-{scenario.name}"
    repo = make_git_repo(base / "sample-repo")
    with ScriptedModelServer(SCRIPTS_DIR / scenario.script) as server:
        if scenario.argv is None:
            _, _, argv, env = provider_command(scenario.cli, server, repo, base / "home", prompt=PROVIDER_PROMPT, model=scenario.model, max_turns=scenario.max_turns, options=scenario.options)
        elif scenario.cli == "claude":
            argv, env = scenario.argv(server.url, repo), claude_env(server, base / "home", extra=scenario.extra_env)
        else:
            argv, env = scenario.argv(server.url, repo), codex_env(base / "home", base / "codex-home")
        done = run_agent(argv, env=env, cwd=repo, timeout=scenario.timeout)
    if DUMMY_API_KEY in done.stdout:
        raise RuntimeError(f"{filename}: the API key value appears in the transcript")
    (out_dir / filename).write_text(done.stdout, encoding="utf-8")
    shown = [a.replace(server.url, "{url}").replace(str(repo), "{repo}").replace(str(base), "{base}") for a in argv]
    shown[0] = Path(shown[0]).name
    return {
        "cli": scenario.cli,
        "version": version,
        "script": f"tests/scripts/{scenario.script}",
        "argv": shown,
        "env": sorted(k for k in env if k not in ("PATH", "HOME", "LANG", "TMPDIR")),
        **({"model": scenario.model, "max_turns": scenario.max_turns, "options": scenario.options} if scenario.argv is None else {}),
        "exit_code": done.returncode,
        "note": scenario.note,
    }


def main(argv: list[str]) -> int:
    """``[OUT_DIR] [CLI …]``: record every scenario, or only those of the CLIs named."""
    out_dir = Path(argv[0]) if argv else DEFAULT_OUT_DIR
    only = set(argv[1:])
    os.environ["PATH"] = f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"  # providers resolve the CLIs on PATH
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_file = out_dir / "manifest.json"
    manifest: dict[str, object] = json.loads(manifest_file.read_text()) if only and manifest_file.exists() else {}
    with tempfile.TemporaryDirectory(prefix="tacx-recording-") as work:
        for scenario in SCENARIOS + provider_scenarios():
            if only and scenario.cli not in only:
                continue
            entry = record(scenario, out_dir, Path(work))
            name = f"{entry['cli']}-{entry['version']}.{scenario.name}.jsonl"
            manifest[name] = entry
            print(f"{name}: exit {entry['exit_code']}")
    (out_dir / "manifest.json").write_text(
        json.dumps(manifest, indent=2) + "\n", encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
