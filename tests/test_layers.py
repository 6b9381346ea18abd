"""The product keeps its import rules (tests/layers.py): no circles, imports point down the floors
of `pipeline`, none of the forbidden directions, no unexplained in-function imports. The checker
itself is checked on a small synthetic tree with one planted violation of each kind."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests import layers

ROOT = Path(__file__).resolve().parent.parent


def test_the_product_has_no_import_circles_and_keeps_its_import_directions():
    problems = layers.check(ROOT)
    assert problems == [], "\n".join(problems)


def test_every_product_package_is_read():
    names = set(layers.modules(ROOT, layers.PRODUCT))
    for expected in (
        "pipeline.attempt.steps",
        "pipeline.services.tasks",
        "pipeline.lib.untrusted",
        "coordinator.lookups",
        "dashboard.views",
        "tacx_site.settings",
    ):
        assert expected in names
    # the floors a newcomer would look up
    assert layers.floor("pipeline.lib.pricing") == 0
    assert layers.floor("pipeline.models") == 1
    assert layers.floor("pipeline.git") == layers.floor("pipeline.sandbox.box") == layers.floor("pipeline.providers.base") == 2
    assert layers.floor("pipeline.services.rounds") == 3
    assert layers.floor("pipeline.attempt.recorder") == 4
    assert layers.floor("pipeline.jobs") == layers.floor("pipeline.management.commands.run_task") == 5
    assert layers.floor("coordinator.loop") is None


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


CLEAN = {
    "pipeline/__init__.py": "",
    "pipeline/lib/__init__.py": "",
    "pipeline/lib/untrusted.py": "import re\n",
    "pipeline/models.py": "from .lib import untrusted\n",
    "pipeline/git.py": "from .models import untrusted\n",
    "pipeline/services/__init__.py": "from .tasks import task_create\n",
    "pipeline/services/tasks.py": "from .. import git\nfrom ..models import untrusted\n\ndef task_create():\n    pass\n",
    "pipeline/attempt/__init__.py": "from .steps import Attempt\n",
    "pipeline/attempt/steps.py": "from typing import TYPE_CHECKING\n\nfrom .. import services\n\nif TYPE_CHECKING:\n    from . import Attempt\n\nclass Attempt:\n    pass\n",
    "pipeline/jobs.py": "from . import attempt, services\n",
    "coordinator/__init__.py": "",
    "coordinator/loop.py": "from pipeline import services\nfrom pipeline.services import tasks\n",
    "dashboard/__init__.py": "",
    "dashboard/views.py": "from pipeline import services\n",
}


def planted(tmp_path: Path, changes: dict[str, str] | None = None) -> list[str]:
    files = {**CLEAN, **(changes or {})}
    write(tmp_path, files)
    return layers.check(tmp_path, packages=("pipeline", "coordinator", "dashboard"), skip=())


def test_the_synthetic_tree_is_clean(tmp_path):
    assert planted(tmp_path) == []


def test_a_circle_is_found(tmp_path):
    problems = planted(
        tmp_path,
        {"pipeline/git.py": "from . import repos\n", "pipeline/repos.py": "from . import git\n"},
    )
    assert problems == ["import circle: pipeline.git -> pipeline.repos"]


def test_an_import_up_a_floor_is_found(tmp_path):
    problems = planted(
        tmp_path,
        {"pipeline/lib/untrusted.py": "from pipeline.models import untrusted\n"},
    )
    assert any(
        "pipeline.lib.untrusted (floor lib) imports pipeline.models (floor models/workflow): imports point down" in p
        for p in problems
    ), problems


def test_services_importing_the_attempt_is_found(tmp_path):
    problems = planted(
        tmp_path,
        {"pipeline/services/tasks.py": "from ..attempt import steps\n"},
    )
    assert any("never pipeline.services -> pipeline.attempt" in p for p in problems), problems
    assert any("import circle" in p for p in problems)  # and attempt imports services back


def test_the_forbidden_directions_are_found(tmp_path):
    problems = planted(
        tmp_path,
        {
            "coordinator/loop.py": "from pipeline.attempt import steps\n",
            "dashboard/views.py": "import coordinator.loop\n",
            "pipeline/git.py": "from dashboard import views\n",
            "pipeline/providers/base.py": "from pipeline import services\n",
            "harness/__init__.py": "",
            "pipeline/models.py": "from harness import fakes\n",
        },
    )
    text = "\n".join(problems)
    for rule in (
        "never coordinator -> pipeline.attempt",
        "never dashboard -> coordinator",
        "never pipeline -> dashboard",
        "never pipeline.providers -> pipeline.services",
        "never pipeline -> harness",
    ):
        assert rule in text, text


def test_an_unexplained_import_inside_a_function_is_found_and_an_explained_one_is_not(tmp_path):
    bare = "def f():\n    from . import git\n    return git\n"
    problems = planted(
        tmp_path,
        {"pipeline/repos.py": bare},
    )
    assert problems == [
        "pipeline/repos.py:2: pipeline.repos imports pipeline.git inside a function; import it at the top, or say which cycle it breaks"
    ]
    explained = "def f():\n    # The cycle this breaks: git imports repos at its top.\n    from . import git\n    return git\n"
    assert (
        planted(
            tmp_path,
            {"pipeline/repos.py": explained},
        )
        == []
    )
