"""The evaluation page in a real browser (Debian's chromium through Playwright, the app served by
daphne on the test database, as tests/test_browser.py): two workflows that one `eval_run`
compared on the same instances are both shown, with which instance each resolved and their two
points in the scatter plot of resolve rate against $ per instance.

The runs are real: `manage.py eval_run` with two workflows whose building stage is a small
agent (the `command` provider, in the sandbox, reporting its model calls as claude's stream-json
so they are priced); A fixes both issues, B only the first and spends less. Graded by the tests.
"""

from __future__ import annotations

import json
import shlex
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from test_browser import CHROMIUM, chromium, login, page, server, shot  # noqa: F401
from test_eval_run_claude import project_instances

from evaluation import selectors
from evaluation.instances import to_jsonl
from evaluation.models import EvalRun
from tests import eval_project

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# An agent that reports one model call (claude-sonnet-4-5, INPUT/OUTPUT tokens), then fixes the
# first bug its base still has: add() always; the missing ordering() only when FIX_ORDERING.
AGENT = """
import json, pathlib, subprocess
def say(line):
    print(json.dumps(line), flush=True)
say({{"type": "system", "subtype": "init", "session_id": "s", "model": "claude-sonnet-4-5"}})
say({{"type": "assistant", "message": {{"id": "m1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
     "content": [{{"type": "text", "text": "fixing"}}], "usage": {{"input_tokens": {input}, "output_tokens": {output}}}}}}})
calc = pathlib.Path("calc.py")
text = calc.read_text()
if "return a - b" in text:
    calc.write_text(text.replace("return a - b", "return a + b"))
elif {fix_ordering} and "def ordering" not in text:
    calc.write_text(text + {ordering!r})
if calc.read_text() != text:
    subprocess.run(["git", "add", "calc.py"], check=True)
    subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@x", "commit", "-qm", "fix"], check=True)
say({{"type": "result", "subtype": "success", "is_error": False, "result": "done", "num_turns": 1,
     "usage": {{"input_tokens": {input}, "output_tokens": {output}}}}})
"""


def workflow(*, fix_ordering: bool, input: int, output: int) -> str:
    argv = [sys.executable, "-c", AGENT.format(fix_ordering=fix_ordering, input=input, output=output, ordering=eval_project.ORDERING)]
    return "\n".join([
        "stages:",
        "  - name: building",
        "    provider: command",
        "    timeout: 120",
        "    max_attempts: 1",
        "    options:",
        f"      argv: {json.dumps(argv)}",
        "      format: claude-stream-json",
        "  - name: pr_creation",
    ]) + "\n"


def test_two_workflows_compared_on_the_same_instances_are_both_shown(server, page, transactional_db, alice, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    repo, _ = eval_project.build(tmp_path)
    instances = tmp_path / "instances.jsonl"
    instances.write_text(to_jsonl([i for i in project_instances(repo) if i.instance_id in ("calc-1", "calc-2")]))
    thorough, cheap = tmp_path / "thorough.yaml", tmp_path / "cheap.yaml"
    thorough.write_text(workflow(fix_ordering=True, input=20000, output=1000))
    cheap.write_text(workflow(fix_ordering=False, input=5000, output=200))
    call_command(
        "eval_run", str(instances), "--workflow", str(thorough), "--workflow", str(cheap), "--concurrency", "2",
        "--test-timeout", "10", "--test-runner", shlex.join(eval_project.RUNNER), stdout=StringIO(), stderr=StringIO(),
    )
    a, b = EvalRun.objects.order_by("id")
    sa, sb = selectors.run_summary(a), selectors.run_summary(b)
    assert (sa.resolved, sb.resolved) == (2, 1) and sa.cost_per_instance > sb.cost_per_instance > 0

    login(page, server)
    page.goto(server + "/evaluations/")  # the latest batch: both runs
    runs = page.locator("#eval-runs tbody tr")
    expect(runs).to_have_count(2)
    expect(page.locator(f'#eval-runs tr[data-run="{a.pk}"]')).to_contain_text("thorough.yaml")
    expect(page.locator(f'#eval-runs tr[data-run="{a.pk}"] .rate')).to_have_text("100%")
    expect(page.locator(f'#eval-runs tr[data-run="{b.pk}"]')).to_contain_text("cheap.yaml")
    expect(page.locator(f'#eval-runs tr[data-run="{b.pk}"] .rate')).to_have_text("50%")
    expect(page.locator("#different-instances")).to_have_count(0)  # the same instances
    # Which instance each resolved: one row per instance, one cell per run.
    expect(page.locator('#eval-instances tr[data-instance="calc-1"] td .badge')).to_have_text(["resolved", "resolved"])
    expect(page.locator('#eval-instances tr[data-instance="calc-2"] td .badge')).to_have_text(["resolved", "empty_patch"])
    # The scatter plot: one point per run, the thorough run higher (rate) and further right ($).
    points = page.locator("#eval-scatter circle.point")
    expect(points).to_have_count(2)
    pa, pb = (page.locator(f'#eval-scatter circle[data-run="{r.pk}"]') for r in (a, b))
    assert float(pa.get_attribute("cy")) < float(pb.get_attribute("cy"))
    assert float(pa.get_attribute("cx")) > float(pb.get_attribute("cx"))
    box = page.locator("#eval-scatter").bounding_box()
    assert box and box["width"] > 200 and box["height"] > 100  # drawn, not collapsed
    shot(page, "20-evaluations-compared")
