"""The import rules of the product, checked from the source (``ast``; nothing is imported).

`check(root)` reads every ``.py`` file of the product packages under `root` and returns one
sentence per broken rule:

- no import circles between modules (an import inside ``if TYPE_CHECKING:`` does not run and
  does not count; a package's implicit import of its ``__init__`` does not count either);
- the floors inside ``pipeline``: an import may only point to its own floor or one below;
- the "never" rules: services -> attempt, providers -> services, coordinator ->
  pipeline.attempt, dashboard -> coordinator, pipeline -> coordinator or dashboard, any product
  package -> harness, and evaluation's: pipeline -> evaluation, evaluation -> pipeline.attempt,
  coordinator or dashboard;
- an import of a project module inside a function carries a comment saying which cycle it
  breaks (the word ``cycle`` on its line or the line above).

The rules are data (`FLOORS`, `NEVER`), so the synthetic package in ``test_layers.py`` checks the
checker with the same code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PRODUCT = ("pipeline", "coordinator", "dashboard", "evaluation", "tacx_site")
PROJECT = (*PRODUCT, "harness")
# Modules left out of the check (none: the model server and the fake runner now live in harness/).
SKIP: tuple[str, ...] = ()

# Floors inside `pipeline`, lowest first: a module may import its own floor and those below.
# A module not listed is a wrapper of the outside world (floor 2).
FLOORS: dict[str, int] = {
    "pipeline.lib": 0,
    "pipeline.models": 1,
    "pipeline.workflow": 1,
    "pipeline.migrations": 1,
    "pipeline.services": 3,
    "pipeline.attempt": 4,
    "pipeline.jobs": 5,
    "pipeline.stage_host": 5,
    "pipeline.admin": 5,
    "pipeline.apps": 5,
    "pipeline.management": 5,
}
WRAPPERS = 2
FLOOR_NAMES = {0: "lib", 1: "models/workflow", 2: "wrappers", 3: "services", 4: "attempt", 5: "jobs/admin/management"}

# (importer prefix, imported prefix, why)
NEVER: tuple[tuple[str, str, str], ...] = (
    ("pipeline.services", "pipeline.attempt", "services change state; only jobs run attempts"),
    ("pipeline.providers", "pipeline.services", "a provider wraps a CLI and writes nothing"),
    ("coordinator", "pipeline.attempt", "the coordinator queues work; it never runs an agent"),
    ("dashboard", "coordinator", "the dashboard reads pipeline state, not the coordinator's"),
    ("pipeline", "coordinator", "pipeline is below the apps that use it"),
    ("pipeline", "dashboard", "pipeline is below the apps that use it"),
    ("pipeline", "harness", "no product module imports the harness"),
    ("coordinator", "harness", "no product module imports the harness"),
    ("dashboard", "harness", "no product module imports the harness"),
    ("tacx_site", "harness", "no product module imports the harness"),
    ("evaluation", "harness", "no product module imports the harness"),
    ("pipeline", "evaluation", "pipeline is below the apps that use it"),
    ("coordinator", "evaluation", "the coordinator dispatches issues' tasks; evaluation runs drive their own"),
    ("evaluation", "pipeline.attempt", "an evaluation runs its tasks through the stage jobs (pipeline.jobs), never an attempt itself"),
    ("evaluation", "coordinator", "an evaluation drives its own tasks; its repositories are disabled for the coordinator"),
    ("evaluation", "dashboard", "the dashboard shows evaluations, not the other way round"),
)


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool
    commented: bool


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    found = {}
    for package in packages:
        base = root / package
        if base.is_dir():
            for path in sorted(base.rglob("*.py")):
                if "node_modules" not in path.parts:
                    found[module_name(root, path)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: set[str], project: Iterable[str] = PROJECT) -> list[Import]:
    """The project modules `name` imports, resolved to modules of `known` where they are ones."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: list[Import] = []

    def commented(line: int) -> bool:
        """The word "cycle" on the import's line or in the comment lines right above it."""
        if "cycle" in lines[line - 1]:
            return True
        i = line - 2
        while i >= 0 and lines[i].strip().startswith("#"):
            if "cycle" in lines[i]:
                return True
            i -= 1
        return False

    def add(target: str, node: ast.stmt, in_function: bool) -> None:
        if target.split(".")[0] in project:
            found.append(Import(name, target, node.lineno, in_function, commented(node.lineno)))

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other, in_function)
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, in_function)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = here[: len(here) - (child.level - 1)] if child.level > 1 else here
                    stem = ".".join(base + ([child.module] if child.module else []))
                else:
                    stem = child.module or ""
                for alias in child.names:
                    candidate = f"{stem}.{alias.name}"
                    add(candidate if candidate in known else stem, child, in_function)
            visit(child, inner)

    visit(ast.parse(source, filename=str(path)), False)
    return found


def floor(name: str) -> int | None:
    if not _under(name, "pipeline") or name == "pipeline":
        return None
    best = max((p for p in FLOORS if _under(name, p)), key=len, default=None)
    return FLOORS[best] if best else WRAPPERS


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def check(root: Path, packages: Iterable[str] = PRODUCT, skip: Iterable[str] = SKIP) -> list[str]:
    packages, skip = tuple(packages), tuple(skip)
    mods = {n: p for n, p in modules(root, packages).items() if not any(_under(n, s) for s in skip)}
    known = set(modules(root, PROJECT + packages))
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        for imp in imports_of(name, path, known, project=PROJECT + packages):
            where = f"{path.relative_to(root)}:{imp.line}"
            if imp.imported in mods and imp.imported != name:
                graph.setdefault(name, set()).add(imp.imported)
            if imp.in_function and not imp.commented:
                problems.append(
                    f"{where}: {name} imports {imp.imported} inside a function; import it at the top, or say which cycle it breaks"
                )
            low, high = floor(name), floor(imp.imported)
            if low is not None and high is not None and high > low:
                problems.append(
                    f"{where}: {name} (floor {FLOOR_NAMES[low]}) imports {imp.imported} (floor {FLOOR_NAMES[high]}): imports point down"
                )
            for src, dst, why in NEVER:
                if _under(name, src) and _under(imp.imported, dst):
                    problems.append(f"{where}: {name} imports {imp.imported}: never {src} -> {dst} ({why})")
    for component in cycles(graph):
        problems.append("import circle: " + " -> ".join(component))
    return problems
