"""The generic command provider: an argv template with placeholders, and three output formats."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.providers import get_provider
from pipeline.providers.base import Invocation, ProviderError, agent_environment
from pipeline.providers.claude import ClaudeStreamParser
from pipeline.providers.codex import CodexStreamParser

FIXTURES = Path(__file__).parent / "fixtures" / "transcripts"
NASTY = "$(rm -rf /); `x` && ../../etc {model} {cwd}"


def inv(argv, **kw) -> Invocation:
    options = {"argv": argv, **kw.pop("options", {})}
    return Invocation(**{"prompt": NASTY, "cwd": "/work/tree", "model": "m-1", "max_turns": 5, "options": options, **kw})


def test_placeholders_are_filled_once_per_element():
    argv = get_provider("command").build_command(inv(["echo", "--model={model}", "{cwd}", "{max_turns}", "{prompt}", "{unknown} {"]))

    assert argv[1:] == ["--model=m-1", "/work/tree", "5", NASTY, "{unknown} {"]
    assert argv[0].endswith("/echo")


def test_extra_args_follow_the_template():
    argv = get_provider("command").build_command(inv(["echo", "{prompt}"], extra_args=("--x",)))

    assert argv[-2:] == [NASTY, "--x"]


@pytest.mark.parametrize("argv", [None, [], "echo {prompt}", ["echo", 3]])
def test_argv_must_be_a_non_empty_list_of_strings(argv):
    with pytest.raises(ProviderError) as caught:
        get_provider("command").build_command(inv(argv))

    assert caught.value.permanent is True


def test_an_unknown_format_is_a_permanent_error_naming_the_formats():
    with pytest.raises(ProviderError) as caught:
        get_provider("command").build_command(inv(["echo"], options={"format": "xml"}))

    assert caught.value.permanent is True
    assert "claude-stream-json" in caught.value.message


def test_the_json_formats_use_the_claude_and_codex_parsers():
    provider = get_provider("command")

    assert isinstance(provider.parser(inv(["x"], options={"format": "claude-stream-json"})), ClaudeStreamParser)
    assert isinstance(provider.parser(inv(["x"], options={"format": "codex-json"})), CodexStreamParser)


def test_a_real_program_gets_the_prompt_intact_and_its_lines_become_output_rows(tmp_path):
    invocation = inv([sys.executable, "-c", "import sys; print('got:'); print(sys.argv[1]); print(); print('bye')", "{prompt}"], cwd=str(tmp_path))
    provider = get_provider("command")
    argv = provider.build_command(invocation)
    proc = subprocess.run(argv, cwd=tmp_path, env=agent_environment(provider, invocation), capture_output=True, text=True, check=False)
    parser = provider.parser(invocation)

    events = [e for line in proc.stdout.splitlines(keepends=True) for e in parser.feed(line)]
    outcome = parser.finish(exit_code=proc.returncode)

    assert [e.data["text"] for e in events] == ["got:", NASTY, "bye"]
    assert {e.kind for e in events} == {"output"}
    assert outcome.success is True
    assert outcome.final_text == proc.stdout.strip("\n")


def test_a_text_program_fails_on_a_non_zero_exit_with_its_stderr():
    provider = get_provider("command")
    parser = provider.parser(inv(["x"]))
    parser.feed("working\n")

    outcome = parser.finish(exit_code=3, stderr_tail="no such file")

    assert outcome.success is False
    assert outcome.error == "agent exited with code 3: no such file"


def test_the_claude_format_parses_a_claude_transcript():
    parser = get_provider("command").parser(inv(["x"], options={"format": "claude-stream-json"}))
    for line in (FIXTURES / "claude-2.1.197.tool-use-success.jsonl").read_text().splitlines():
        parser.feed(line)

    assert parser.finish(exit_code=0).success is True
