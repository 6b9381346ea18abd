"""A real small Python project for the evaluation tests, built as a git history: a pytest suite
and commits that close issues, three good ones and three traps the miner must drop.

History (oldest first):

1. initial: calc.py with three bugs (add subtracts, ordering() is missing, countdown() loops
   forever on a negative number); tests/test_calc.py with tests that pass.
2. "Fix add() (Fixes #1)": the fix and a new test_add_adds.
3. "Parse ORDER BY words. Closes #2": ordering() and parametrised tests whose ids hold spaces
   and brackets (``test_ordering[ASC NULLS FIRST]``).
4. "countdown stops at zero (fixes #3)": the fix and a test that loops forever before it.
5. "Needs a future Python (Fixes #4)": a test that fails before and after on this interpreter.
6. "Document add (Fixes #5)": a README change only (no test).
7. "Unrelated tidy-up": no issue closed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import git

CALC = '''"""A tiny calculator."""


def add(a, b):
    return a - b


def countdown(n):
    steps = []
    while n != 0:
        steps.append(n)
        n -= 1
    return steps
'''

TESTS = '''import calc


def test_countdown_from_three():
    assert calc.countdown(3) == [3, 2, 1]


def test_module_has_a_docstring():
    assert calc.__doc__
'''

FIX_ADD = ("    return a - b\n", "    return a + b\n")
TEST_ADD = '''

def test_add_adds():
    assert calc.add(2, 3) == 5
'''

ORDERING = '''

def ordering(spec):
    """"name ASC NULLS FIRST" -> ("name", "ASC", "FIRST")."""
    words = spec.split()
    nulls = words[words.index("NULLS") + 1] if "NULLS" in words else ""
    return words[0], words[1] if len(words) > 1 else "ASC", nulls
'''
TEST_ORDERING = '''

import pytest  # noqa: E402


@pytest.mark.parametrize("spec", ["ASC NULLS FIRST", "DESC NULLS LAST", "ASC [x]"])
def test_ordering(spec):
    assert calc.ordering("name " + spec)[1] == spec.split()[0]
'''

FIX_COUNTDOWN = ("    while n != 0:\n", "    while n > 0:\n")
TEST_COUNTDOWN = '''

def test_countdown_from_minus_one_is_empty():
    assert calc.countdown(-1) == []
'''

TEST_FUTURE = '''

def test_needs_python_nine():
    import sys

    assert sys.version_info >= (9,)
'''

# The flipping tests of the three good commits, as eval_mine must find them.
FAIL_TO_PASS = {
    1: ["tests/test_calc.py::test_add_adds"],
    2: [
        "tests/test_calc.py::test_ordering[ASC NULLS FIRST]",
        "tests/test_calc.py::test_ordering[DESC NULLS LAST]",
        "tests/test_calc.py::test_ordering[ASC [x]]",
    ],
    3: ["tests/test_calc.py::test_countdown_from_minus_one_is_empty"],
}

# The runner the tests use: this interpreter's pytest, without the plugins of TAC-X's own venv.
RUNNER = ["env", "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1", sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "--continue-on-collection-errors"]
WORKFLOW = """
test_command:
  run: python -m pytest -q
  env: {PYTEST_DISABLE_PLUGIN_AUTOLOAD: "1"}
"""


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def build(base: Path, name: str = "calc") -> tuple[Path, dict[int, str]]:
    """The project's repository (a working copy on `main` with a bare `origin`) and the commit
    of each issue's fix."""
    repo = base / name
    origin = base / f"{name}-origin.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(origin)], check=True)
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(repo)], check=True)
    (repo / "tests").mkdir()
    (repo / "calc.py").write_text(CALC)
    (repo / "tests" / "test_calc.py").write_text(TESTS)
    (repo / "README.md").write_text("# calc\n")
    _commit(repo, "initial commit")
    fixes: dict[int, str] = {}
    _edit(repo / "calc.py", *FIX_ADD)
    _append(repo / "tests" / "test_calc.py", TEST_ADD)
    fixes[1] = _commit(repo, "Fix add() subtracting\n\nadd(2, 3) gave -1.\n\nFixes #1")
    _append(repo / "calc.py", ORDERING)
    _append(repo / "tests" / "test_calc.py", TEST_ORDERING)
    fixes[2] = _commit(repo, "Parse ORDER BY words. Closes #2")
    _edit(repo / "calc.py", *FIX_COUNTDOWN)
    _append(repo / "tests" / "test_calc.py", TEST_COUNTDOWN)
    fixes[3] = _commit(repo, "countdown stops at zero (fixes #3)")
    _append(repo / "calc.py", "\n\nFUTURE = True\n")
    _append(repo / "tests" / "test_calc.py", TEST_FUTURE)
    fixes[4] = _commit(repo, "Needs a future Python (Fixes #4)")
    _append(repo / "README.md", "\nadd(a, b) adds.\n")
    fixes[5] = _commit(repo, "Document add (Fixes #5)")
    _append(repo / "README.md", "\nMIT\n")
    _commit(repo, "Unrelated tidy-up")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "--quiet", "origin", "main")
    return repo, fixes
