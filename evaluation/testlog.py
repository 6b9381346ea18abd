"""Reading pytest's verdict per test from its output (``-rA``'s "short test summary info").

Why not the ``swebench`` package's parser: ``swebench.harness.log_parsers.parse_log_pytest``
splits each summary line on whitespace, so ``test_x[ASC NULLS FIRST]`` comes back as
``test_x[ASC`` (SWE-bench works around it per repository), and the package pulls in docker,
datasets, modal, pandas and pyarrow (about fifty distributions) for one function. This one reads
the same lines and keeps a test id whole: when the ids are known (the instance's lists, or
pytest's ``--collect-only``) the longest known id the line starts with wins; otherwise the id
ends at the first " - " outside square brackets (pytest's separator before the message).

The rule for what passes is pytest's own: a test passes when pytest does not count it as a
failure: ``PASSED``, ``XFAIL`` (an expected failure that failed) and ``XPASS`` (a non-strict
expected failure that passed). ``FAILED`` and ``ERROR`` fail, and so does a strict xfail that
passed (pytest reports it as ``FAILED … [XPASS(strict)]``). ``SKIPPED`` is neither, and so is a
test that does not appear at all (SWE-bench counts a missing test as failing; so does grading
here, through `passed`). ``TIMEOUT`` is TAC-X's own: the test ran past the per-test limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

PASSED, FAILED, ERROR, SKIPPED, XFAIL, XPASS, TIMEOUT = "PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS", "TIMEOUT"
STATUSES = (PASSED, FAILED, ERROR, SKIPPED, XFAIL, XPASS)
PASSING = frozenset({PASSED, XFAIL, XPASS})
FAILING = frozenset({FAILED, ERROR, TIMEOUT})
SUMMARY_HEADER = "short test summary info"


def _id_by_brackets(rest: str) -> str:
    """The test id at the start of `rest`: up to " - " outside square brackets, or the end."""
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        elif depth == 0 and rest.startswith(" - ", i):
            return rest[:i]
    return rest.rstrip()


def _id_by_known(rest: str, known: Iterable[str]) -> str | None:
    best = None
    for test_id in known:
        if rest == test_id or rest.startswith(test_id + " "):
            if best is None or len(test_id) > len(best):
                best = test_id
    return best


def parse_pytest(output: str, *, known: Iterable[str] = ()) -> dict[str, str]:
    """``{test id: status}`` from pytest output run with ``-rA``. Only the lines after the
    "short test summary info" header count (a test's own output cannot forge a verdict above
    it); a file that failed to be collected is reported under the file's path. When a test is
    reported twice the failing verdict wins."""
    known = [k for k in known if k]
    found: dict[str, str] = {}
    in_summary = False
    for line in output.splitlines():
        if SUMMARY_HEADER in line and line.startswith("="):
            in_summary = True
            continue
        if not in_summary:
            continue
        word, _, rest = line.partition(" ")
        if word not in STATUSES or not rest or word == SKIPPED and rest.startswith("["):
            continue  # "SKIPPED [1] path:line: reason" names no test
        test_id = (_id_by_known(rest, known) if known else None) or _id_by_brackets(rest)
        if found.get(test_id) in FAILING:
            continue
        found[test_id] = word
    return found


def passed(statuses: Mapping[str, str], test_id: str) -> bool:
    return statuses.get(test_id) in PASSING


def failed(statuses: Mapping[str, str], test_id: str) -> bool:
    """Failing or absent (a test that was not reported did not pass). Skipped is neither."""
    status = statuses.get(test_id)
    return status is None or status in FAILING


def collected_ids(output: str) -> list[str]:
    """The test ids ``pytest --collect-only -q`` printed, in order (one per line, before the
    blank line and the "N tests collected" count)."""
    ids = []
    for line in output.splitlines():
        if not line.strip():
            break
        if "::" in line and not line.startswith(("ERROR", "=", "!")):
            ids.append(line)
    return ids
