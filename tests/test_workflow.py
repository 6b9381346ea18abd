"""Workflow files are validated completely on load; errors name the file, the field and the problem."""

from __future__ import annotations

import pytest

from pipeline.workflow import Workflow, WorkflowError, default_workflow, load_workflow_text


def refusal(text: str, **kwargs) -> WorkflowError:
    """What loading `text` raises (the test fails if it loads)."""
    with pytest.raises(WorkflowError) as exc:
        load_workflow_text(text, **kwargs)
    return exc.value


def test_the_default_workflow_has_the_four_core_stages():
    wf = default_workflow()
    assert [s.name for s in wf.stages] == ["planning", "building", "reviewing", "pr_creation"]
    assert wf.stage("pr_creation").provider == "tacx"
    assert all(s.provider == "claude" for s in wf.stages[:3])


def test_a_repository_file_overrides_only_what_it_sets():
    wf = load_workflow_text(
        """
review_rounds: 3
stages:
  - name: planning
    model: claude-haiku-4-5
  - name: building
    provider: codex
    model: gpt-5
    timeout: 99
  - name: reviewing
  - name: pr_creation
"""
    )
    default = default_workflow()
    assert wf.review_rounds == 3
    assert wf.max_test_rounds == 2 and Workflow.from_json(wf.to_json()).max_test_rounds == 2  # the default, kept by a snapshot
    assert wf.stage("planning").model == "claude-haiku-4-5"
    assert wf.stage("planning").prompt == default.stage("planning").prompt
    assert wf.stage("building").provider == "codex" and wf.stage("building").timeout == 99
    assert wf.source == ".tac/workflow.yaml"


def test_the_snapshot_round_trips():
    wf = load_workflow_text("stages:\n  - {name: planning, budget: {usd: 0.5, tokens: 1000}}\n  - {name: building}\n  - {name: pr_creation}\n")
    again = type(wf).from_json(wf.to_json())
    assert again.to_json()["stages"] == wf.to_json()["stages"]
    assert str(again.stage("planning").budget.usd) == "0.5"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("stages: [\n  - name: x", "line "),
        ("stages:\n  - name: planning\n    provider: clod\n", "stages[0] (planning).provider: unknown provider 'clod'"),
        ("stages:\n  - name: planning\n    colour: blue\n", "stages[0] (planning).colour: unknown key"),
        ("stages:\n  - name: planning\n    timeout: -5\n", "stages[0] (planning).timeout: must be >= 1, got -5"),
        ("stages:\n  - name: planning\n    timeout: soon\n", "stages[0] (planning).timeout: must be an integer, got str"),
        ("stages:\n  - name: planning\n    max_turns: true\n", "max_turns: must be an integer, got bool"),
        ("review_rounds: 0\n", "review_rounds: must be >= 1"),
        ("max_test_rounds: 0\n", "max_test_rounds: must be >= 1"),
        ("max_test_rounds: many\n", "max_test_rounds: must be an integer, got str"),
        ("stages: []\n", "stages: must be a non-empty list"),
        ("stages:\n  - name: planning\n    prompt: 'Do {isue_title}'\n", "unknown placeholder {isue_title}"),
        ("stages:\n  - name: planning\n    budget: {usd: -1}\n", "budget.usd: must be >= 0"),
        ("stages:\n  - name: pr_creation\n  - name: planning\n", "pr_creation must be the last stage"),
        ("stages:\n  - name: testing\n", "stages[0] (testing).provider: is required"),
        ("- just\n- a list\n", "(top level): must be a mapping"),
        ("", "the file is empty"),
        ("stages:\n  - name: 'a b'\n", "stages[0].name: must be a non-empty word"),
    ],
)
def test_an_invalid_file_names_the_file_the_field_and_the_problem(text, expected):
    message = str(refusal(text))
    assert message.startswith(".tac/workflow.yaml: ")
    assert expected in message


def test_invalid_yaml_reports_the_line():
    with pytest.raises(WorkflowError, match=r"line 3, column \d+: invalid YAML"):
        load_workflow_text("stages:\n  - name: planning\n  provider: [unclosed\n")


def test_every_problem_of_a_file_is_reported_at_once():
    text = (
        "review_rounds: 0\n"
        "colour: blue\n"
        "stages:\n"
        "  - name: planning\n    provider: clod\n"
        "  - name: building\n    timeout: -1\n    max_turns: many\n"
        "  - name: reviewing\n    prompt: 'Do {isue_title}'\n"
        "  - name: pr_creation\n"
    )
    error = refusal(text)
    errors = error.errors
    assert errors == [
        ".tac/workflow.yaml: colour: unknown key (allowed: allow_submodules, approval, approval_skip_label, budget, commit_limit, defaults, environment, hooks, max_ci_fix_attempts, "
        "max_followup_rounds, max_test_rounds, mcp, memory, mention, network, publish, resume_session, review_rounds, setup_env, stages, test_command, toolchains, version)",
        ".tac/workflow.yaml: review_rounds: must be >= 1, got 0",
        ".tac/workflow.yaml: stages[0] (planning).provider: unknown provider 'clod' (known: claude, codex, gemini, qwen, opencode, command)",
        ".tac/workflow.yaml: stages[1] (building).timeout: must be >= 1, got -1",
        ".tac/workflow.yaml: stages[1] (building).max_turns: must be an integer, got str 'many'",
        ".tac/workflow.yaml: stages[2] (reviewing).prompt: unknown placeholder {isue_title} (known: branch, followup, issue_body, "
        "issue_number, issue_title, memory, plan, repository, review_feedback, round, stage, test_result, worktree)",
    ]
    assert str(error) == "\n".join(errors)


def test_the_round_keys_are_validated_and_kept_in_the_snapshot():
    wf = load_workflow_text("approval: plan\nmax_followup_rounds: 2\nmax_ci_fix_attempts: 1\nmention: '@helper'\nresume_session: false\n")
    again = type(wf).from_json(wf.to_json())
    assert (again.approval, again.max_followup_rounds, again.max_ci_fix_attempts, again.mention, again.resume_session) == ("plan", 2, 1, "@helper", False)
    assert load_workflow_text(None).approval == "none" and load_workflow_text(None).max_ci_fix_attempts == 3
    errors = refusal("approval: always\nmention: tacx\nresume_session: maybe\nmax_ci_fix_attempts: -1\n").errors
    assert [e.split(": ", 2)[1] for e in errors] == ["approval", "max_ci_fix_attempts", "mention", "resume_session"]


def test_allow_submodules_is_off_by_default_validated_and_kept_in_the_snapshot():
    assert load_workflow_text(None).allow_submodules is False
    wf = load_workflow_text("allow_submodules: true\n")
    assert type(wf).from_json(wf.to_json()).allow_submodules is True
    with pytest.raises(WorkflowError, match=r"\.tac/workflow\.yaml: allow_submodules: must be true or false, got 'yes please'"):
        load_workflow_text("allow_submodules: yes please\n")


def test_a_stage_on_another_provider_does_not_inherit_the_default_stages_cli_flags():
    default = default_workflow().stage("planning")
    wf = load_workflow_text("stages:\n  - {name: planning, provider: gemini}\n  - {name: pr_creation}\n")

    planning = wf.stage("planning")
    assert planning.provider == "gemini"
    # Claude's words would break the Gemini CLI (--approval-mode acceptEdits, --allowed-tools Read …).
    assert (planning.model, planning.permission_mode, tuple(planning.allowed_tools), planning.options) == ("", "", (), {})
    assert (planning.prompt, planning.timeout, planning.max_turns) == (default.prompt, default.timeout, default.max_turns)


def test_a_stage_on_the_same_provider_still_inherits_everything():
    default = default_workflow().stage("planning")
    wf = load_workflow_text(f"stages:\n  - {{name: planning, provider: {default.provider}}}\n  - {{name: pr_creation}}\n")

    assert wf.stage("planning") == default


NO_PR = "stages:\n  - {name: planning}\n  - {name: building}\n  - {name: reviewing}\n"


def test_a_pipeline_without_pr_creation_is_refused_naming_the_file_and_the_fix():
    (error,) = refusal(NO_PR, source="acme/widgets:.tac/workflow.yaml").errors
    assert error.startswith("acme/widgets:.tac/workflow.yaml: stages: has no pr_creation stage")
    assert "`- name: pr_creation`" in error and "`publish: none`" in error


def test_publish_none_runs_the_listed_stages_without_publishing_and_survives_the_snapshot():
    wf = load_workflow_text(NO_PR + "publish: none\n")
    assert [s.name for s in wf.stages] == ["planning", "building", "reviewing"] and wf.publish == "none"
    assert type(wf).from_json(wf.to_json()).publish == "none"
    assert load_workflow_text(None).publish == "pr_creation"


def test_publish_is_validated_like_the_other_keys():
    with pytest.raises(WorkflowError, match=r"\.tac/workflow\.yaml: publish: must be one of pr_creation, none, got 'github'"):
        load_workflow_text(NO_PR + "publish: github\n")
    with pytest.raises(WorkflowError, match=r"\.tac/workflow\.yaml: publish: is none, but the stages list pr_creation; remove one of the two"):
        load_workflow_text(NO_PR + "  - {name: pr_creation}\npublish: none\n")
    with pytest.raises(WorkflowError, match=r"publish: is none, but the default stages \(inherited"):
        load_workflow_text("publish: none\n")


def test_a_snapshot_taken_before_publish_existed_still_loads():
    snapshot = load_workflow_text(NO_PR + "publish: none\n").to_json()
    del snapshot["publish"]
    assert type(load_workflow_text(None)).from_json(snapshot).publish == "none"


def test_a_budget_says_what_it_does_when_reached_and_a_bad_value_is_explained():
    wf = load_workflow_text(
        "budget: {usd: 5, on_exceed: pause}\nstages:\n  - {name: building, budget: {tokens: 1000, on_exceed: fail}}\n  - {name: pr_creation}\n"
    )
    assert (wf.budget.on_exceed, wf.stage("building").budget.on_exceed) == ("pause", "fail")
    again = Workflow.from_json(wf.to_json())
    assert again.budget.on_exceed == "pause" and again.stage("building").budget.tokens == 1000
    assert load_workflow_text("budget: {usd: 5}\n").budget.on_exceed == "fail"  # the default, as before
    with pytest.raises(WorkflowError) as caught:
        load_workflow_text("stages:\n  - {name: building, budget: {usd: 1, on_exceed: ask}}\n  - {name: pr_creation}\n")
    assert str(caught.value) == (
        ".tac/workflow.yaml: stages[0] (building).budget.on_exceed: must be fail (end the task when the budget is reached) "
        "or pause (stop, keep the work and wait for a person), got 'ask'"
    )
    # A snapshot taken before on_exceed existed still loads, as fail.
    old = wf.to_json()
    del old["budget"]["on_exceed"]
    assert Workflow.from_json(old).budget.on_exceed == "fail"
