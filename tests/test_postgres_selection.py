"""`make test-postgres` keeps exactly the tests that touch the database (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT, uses_database


class Item:
    def __init__(self, fixtures=(), marked=False):
        self.fixturenames = list(fixtures)
        self.marked = marked

    def get_closest_marker(self, name):
        return object() if self.marked and name == "django_db" else None


def test_a_test_touches_the_database_through_a_mark_or_a_fixture_in_its_closure():
    assert uses_database(Item(marked=True))
    assert uses_database(Item(fixtures=("request", "local_repository", "db")))
    assert uses_database(Item(fixtures=("transactional_db",)))
    # pytest-django's own autouse helpers do not count: a parser test stays out of the pass.
    assert not uses_database(Item(fixtures=("request", "django_db_blocker", "settings", "tmp_path")))


def test_the_postgres_pass_deselects_database_free_tests_and_keeps_the_rest():
    env = {**os.environ, "TACX_TESTS_DATABASE_ONLY": "1"}
    args = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", "tests/test_worktree_reads.py", "tests/test_pages_admin.py"]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120).stdout
    assert "test_pages_admin.py::" in out and "test_worktree_reads.py::" not in out
    everything = subprocess.run(args, cwd=ROOT, env={k: v for k, v in env.items() if k != "TACX_TESTS_DATABASE_ONLY"}, capture_output=True, text=True, timeout=120).stdout
    assert "test_worktree_reads.py::" in everything
