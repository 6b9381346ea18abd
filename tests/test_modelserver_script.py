"""Scripts for the scripted model server: loading, validation errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.modelserver.script import ScriptError, ToolCall, Usage, load_script

SCRIPTS_DIR = Path(__file__).parent / "scripts"


def one_turn(turn: object) -> dict:
    return {"conversations": [{"name": "c", "turns": [turn]}]}


def test_it_loads_every_example_script():
    for path in sorted(SCRIPTS_DIR.glob("*.yaml")):
        script = load_script(path)
        assert script.conversations, path


def test_it_loads_yaml_text_json_text_and_dicts_alike():
    as_dict = {
        "conversations": [{"name": "c", "match": "M", "turns": [{"text": "hi"}]}]
    }
    from_yaml = load_script(
        "conversations:\n  - name: c\n    match: M\n    turns:\n      - text: hi\n"
    )
    from_json = load_script(
        '{"conversations": [{"name": "c", "match": "M", "turns": [{"text": "hi"}]}]}'
    )
    assert load_script(as_dict) == from_yaml == from_json


def test_it_translates_the_convenience_tool_call_forms():
    script = load_script(SCRIPTS_DIR / "claude-write-bash.yaml")
    turn = script.conversations[0].turns[0]
    assert turn.tool_calls == (
        ToolCall(kind="write", path="plan.md", content="# Plan\n1. do it\n"),
        ToolCall(
            kind="bash",
            command="git add plan.md && git commit -q -m 'Add plan' && echo committed",
        ),
    )
    assert turn.usage == Usage(
        input_tokens=1234,
        output_tokens=56,
        cache_read_input_tokens=789,
        cache_creation_input_tokens=321,
    )


def test_it_selects_the_first_matching_conversation_and_falls_back_to_a_catch_all():
    script = load_script(
        {
            "conversations": [
                {"name": "plan", "match": "STAGE: plan", "turns": [{"text": "p"}]},
                {"name": "any", "turns": [{"text": "a"}]},
                {"name": "late", "match": "STAGE: late", "turns": [{"text": "l"}]},
            ]
        }
    )
    assert script.select("system ... STAGE: plan ...").name == "plan"
    assert script.select("STAGE: late").name == "any"  # the catch-all comes first



def test_a_list_match_needs_every_part():
    script = load_script(
        {
            "conversations": [
                {"name": "c2", "match": ["add() subtracts", "(candidate c2)"], "turns": [{"text": "x"}]},
                {"name": "single", "match": "add() subtracts", "turns": [{"text": "y"}]},
            ]
        }
    )
    assert script.select("TACX-STAGE: building (candidate c2) add() subtracts").name == "c2"
    assert script.select("TACX-STAGE: building (candidate c1) add() subtracts").name == "single"
    assert script.select("(candidate c2) something else") is None
    with pytest.raises(ScriptError, match=r"conversations\[0\]\.match: must be a non-empty string or a non-empty list"):
        load_script({"conversations": [{"name": "e", "match": [], "turns": [{"text": "x"}]}]})
    with pytest.raises(ScriptError, match=r"conversations\[0\]\.match\[1\]"):
        load_script({"conversations": [{"name": "e", "match": ["a", 3], "turns": [{"text": "x"}]}]})

@pytest.mark.parametrize(
    ("script", "message"),
    [
        ({}, "conversations: is required"),
        ({"conversations": []}, "conversations: must be a non-empty list"),
        (
            {"conversations": [{"turns": [{"text": "x"}]}]},
            "conversations[0].name: is required",
        ),
        (
            {"conversations": [{"name": "c", "turns": []}]},
            "conversations[0].turns: must be a non-empty list",
        ),
        (
            {
                "conversations": [
                    {
                        "name": "c",
                        "turns": [
                            {"text": "a"},
                            {"text": "b"},
                            {"text": "c", "usage": {"input_tokens": -1}},
                        ],
                    }
                ]
            },
            "conversations[0].turns[2].usage.input_tokens: must be a non-negative integer",
        ),
        (
            one_turn({"text": "x", "usage": {"output_tokens": "50"}}),
            "conversations[0].turns[0].usage.output_tokens: must be a non-negative integer",
        ),
        (
            one_turn({"text": "x", "usage": {"cache_read_input_tokens": True}}),
            "conversations[0].turns[0].usage.cache_read_input_tokens: must be a non-negative integer",
        ),
        (
            one_turn(
                {"text": "x", "usage": {"output_tokens": 3, "reasoning_tokens": 4}}
            ),
            "conversations[0].turns[0].usage.reasoning_tokens: must not exceed output_tokens",
        ),
        (
            one_turn({"text": "x", "usage": {"input_tokenz": 1}}),
            "conversations[0].turns[0].usage.input_tokenz: unknown field",
        ),
        (
            one_turn({"tool_calls": [{"write": {"content": "x"}}]}),
            "conversations[0].turns[0].tool_calls[0].write.path: is required",
        ),
        (
            one_turn({"tool_calls": [{"bash": ""}]}),
            "conversations[0].turns[0].tool_calls[0].bash: must not be empty",
        ),
        (
            one_turn({"tool_calls": [{"run": "ls"}]}),
            "conversations[0].turns[0].tool_calls[0]: must have exactly one key",
        ),
        (
            one_turn({"tool_calls": [{"tool": {"input": {}}}]}),
            "conversations[0].turns[0].tool_calls[0].tool.name: is required",
        ),
        (
            one_turn({"status": 200}),
            "conversations[0].turns[0].status: must be an HTTP error status",
        ),
        (
            one_turn({"hang": "yes"}),
            "conversations[0].turns[0].hang: must be true or false",
        ),
        (
            one_turn({"text": "x", "delay": -1}),
            "conversations[0].turns[0].delay: must be a non-negative number",
        ),
        (
            one_turn({}),
            "conversations[0].turns[0]: needs text, tool_calls, status or hang",
        ),
        (
            one_turn({"text": "x", "sleep": 1}),
            "conversations[0].turns[0].sleep: unknown field",
        ),
        (
            {
                "conversations": [
                    {"name": "c", "turns": [{"text": "x"}]},
                    {"name": "c", "turns": [{"text": "y"}]},
                ]
            },
            "conversations[1].name: duplicate name 'c'",
        ),
        (
            {"conversations": [{"name": "c", "match": "", "turns": [{"text": "x"}]}]},
            "conversations[0].match: must not be empty",
        ),
    ],
)
def test_a_bad_script_is_rejected_with_the_field_named(script, message):
    with pytest.raises(ScriptError) as caught:
        load_script(script)
    assert str(caught.value).startswith(message)


def test_unparseable_text_and_missing_files_are_script_errors(tmp_path):
    with pytest.raises(ScriptError, match="not valid YAML/JSON"):
        load_script("conversations: [unclosed")
    with pytest.raises(ScriptError, match="cannot read script"):
        load_script(tmp_path / "missing.yaml")
