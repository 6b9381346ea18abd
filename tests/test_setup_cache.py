"""Setup is fast the second time (issue 21 item 6): a cache per repository under
VAR_DIR/setupcache/<repository id>/<key>, mounted writable into the `setup` hook's sandbox only
(PIP_CACHE_DIR, npm_config_cache, UV_CACHE_DIR by default, more HOME paths with `cache:`), keyed by
the hash of the `cache_key` files (read through the hand-back gate), recorded on the setup hook's
event (key, hit or miss, size) and shown on the task page; cleared from the admin, pruned by age
and size. The agent, the other hooks and the test command never write it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from pipeline import jobs, services, setup_cache
from pipeline.models import AgentEvent, Repository, Task
from pipeline.workflow import HookConfig, Workflow, WorkflowError, load_workflow_text
from tests import conftest
from tests.conftest import grant


def hook(**kw) -> HookConfig:
    return HookConfig(name="setup", run=("true",), timeout=60, **kw)


# --- keys, locks, pruning (no sandbox) ----------------------------------------------------------


def test_cache_and_cache_key_belong_to_the_setup_hook_and_are_validated():
    wf = load_workflow_text("hooks:\n  setup: {run: make deps, cache: [.cache/pre-commit, .m2/repository], cache_key: [requirements.txt, web/package-lock.json]}\n")
    setup = wf.hook("setup")
    assert setup.cache_enabled and setup.cache_paths == (".cache/pre-commit", ".m2/repository")
    assert setup.cache_key == ("requirements.txt", "web/package-lock.json")
    assert Workflow.from_json(wf.to_json()).hook("setup") == setup
    assert load_workflow_text("hooks: {setup: {run: x, cache: false}}").hook("setup").cache_enabled is False
    assert load_workflow_text("hooks: {setup: x}").hook("setup").cache_enabled is True
    with pytest.raises(WorkflowError) as exc:
        load_workflow_text("hooks:\n  setup: {run: x, cache: [../up, tmp/x], cache_key: [/etc/passwd]}\n  before_stage: {run: x, cache: [a]}\n")
    text = "\n".join(exc.value.errors)
    assert ".tac/workflow.yaml: hooks.setup.cache[0]: must be a path relative to the hook's HOME" in text
    assert ".tac/workflow.yaml: hooks.before_stage.cache: only the setup hook has a cache (hooks.setup.cache)" in text
    with pytest.raises(WorkflowError, match=r"hooks.setup.cache\[0\]: tmp is the hook's TMPDIR"):
        load_workflow_text("hooks: {setup: {run: x, cache: [tmp/x]}}")
    with pytest.raises(WorkflowError, match=r"hooks.setup.cache_key\[0\]: must be a file of the repository"):
        load_workflow_text("hooks: {setup: {run: x, cache_key: [/etc/passwd]}}")


def test_the_key_is_the_hash_of_the_key_files_read_through_the_gate(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "requirements.txt").write_text("pytest==8.3.3\n")
    h = hook(cache_key=("requirements.txt", "package-lock.json"))
    first = setup_cache.key_for(h, tree)
    assert first.name.startswith("k") and len(first.name) == 17 and first.files == ("requirements.txt", "package-lock.json")
    assert setup_cache.key_for(h, tree) == first
    assert setup_cache.key_for(hook(), tree).name == "default"

    (tree / "package-lock.json").write_text("{}")  # a file that was missing now exists
    second = setup_cache.key_for(h, tree)
    assert second.name != first.name
    (tree / "requirements.txt").write_text("pytest==8.3.4\n")
    assert setup_cache.key_for(h, tree).name not in (first.name, second.name)

    (tree / "requirements.txt").unlink()
    (tree / "requirements.txt").symlink_to("/etc/passwd")
    refused = setup_cache.key_for(h, tree)
    assert refused.name == "" and "requirements.txt is a symlink to /etc/passwd: refused" in refused.problem


def test_a_symlink_a_setup_planted_in_the_cache_is_never_followed(settings, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    key = setup_cache.Key("default")
    m = setup_cache.mount(repository_id=1, key=key, hook=hook(cache_paths=(".cache/tool",)), hook_env={})
    assert m.links == {".cache/tool": m.dir / "home" / ".cache" / "tool"} and m.hit is False
    assert m.env == {"PIP_CACHE_DIR": str(m.dir / "pip"), "npm_config_cache": str(m.dir / "npm"), "UV_CACHE_DIR": str(m.dir / "uv")}
    setup_cache.finish(m)
    # What a hostile setup could leave: home/ a link out of the cache, the marker a link too.
    (m.dir / "home" / ".cache" / "tool").rmdir()
    (m.dir / "home" / ".cache").rmdir()
    (m.dir / "home").rmdir()
    (m.dir / "home").symlink_to(outside)
    (m.dir / setup_cache.MARKER).unlink()
    (m.dir / setup_cache.MARKER).symlink_to(outside / "marker")

    again = setup_cache.mount(repository_id=1, key=key, hook=hook(cache_paths=(".cache/tool",)), hook_env={"PIP_CACHE_DIR": "/mine"})
    assert again.links == {} and "PIP_CACHE_DIR" not in again.env  # the workflow's own env: wins
    assert again.hit is False  # a marker that is a symlink is no marker
    setup_cache.finish(again)
    assert list(outside.iterdir()) == []
    assert (again.dir / setup_cache.MARKER).is_file() and not (again.dir / setup_cache.MARKER).is_symlink()


def make_key(repository_id: int, name: str, size: int, used: float) -> None:
    m = setup_cache.mount(repository_id=repository_id, key=setup_cache.Key(name), hook=hook(), hook_env={})
    (m.dir / "pip").mkdir(exist_ok=True)
    (m.dir / "pip" / "blob").write_bytes(b"x" * size)
    os.close(m.lock_fd)
    setup_cache._write_marker(m.dir, {"bytes": size, "used": used})


def test_prune_removes_old_keys_then_the_least_recently_used_over_the_size_limit_never_one_in_use(settings):
    settings.TACX = {**settings.TACX, "SETUP_CACHE_MAX_BYTES": 2500, "SETUP_CACHE_MAX_AGE_DAYS": 7}
    now = time.time()
    make_key(3, "kold", 10, now - 8 * 86400)
    make_key(3, "ka", 1000, now - 3000)
    make_key(3, "kb", 1000, now - 2000)
    make_key(3, "kc", 1000, now - 1000)
    busy = setup_cache._lock(setup_cache.root(3), "ka", exclusive=False, wait=True)  # a setup is using ka
    try:
        removed = setup_cache.prune(3, keep="kc", now=now)
    finally:
        os.close(busy)
    # kold is too old; 3000 bytes > 2500: ka is least recent but in use, so kb goes.
    assert removed == ["kold", "kb"]
    assert sorted(k.name for k in setup_cache.keys(3)) == ["ka", "kc"]

    freed, left = setup_cache.clear(3)
    assert freed == 2000 and left == [] and setup_cache.keys(3) == []


@pytest.mark.django_db
def test_the_admin_clears_a_repositorys_setup_cache(client, django_user_model, local_repository):
    make_key(local_repository.pk, "default", 1234, time.time())
    make_key(local_repository.pk + 1, "default", 10, time.time())  # another repository's: kept
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-the-admin"))
    response = client.post("/admin/pipeline/repository/", {"action": "clear_setup_cache", "_selected_action": [local_repository.pk]}, follow=True)
    assert "ample: setup cache cleared (1.2\xa0KB freed)." in response.content.decode()  # capitalised by the admin
    assert setup_cache.keys(local_repository.pk) == [] and len(setup_cache.keys(local_repository.pk + 1)) == 1


# --- two tasks in a row, in the real sandbox -----------------------------------------------------

SETUP = [
    # (each message in two words, so the command line echoed into the output does not contain it)
    'if [ -f "$PIP_CACHE_DIR/seen" ]; then echo "pip-cache" "kept: $(cat "$PIP_CACHE_DIR/seen")"; else echo "pip-cache" "empty"; fi',
    'echo "from task $TACX_TASK_ID" > "$PIP_CACHE_DIR/seen.tmp" && mv "$PIP_CACHE_DIR/seen.tmp" "$PIP_CACHE_DIR/seen"',
    'if [ -f "$HOME/.cache/tool/state" ]; then echo "tool-cache" "kept"; fi; echo built > "$HOME/.cache/tool/state"',
]
# Everything else the task runs tries to write the cache it is given the path of.
TRY_WRITE = 'for d in "$1/pip" "$1/home/.cache/tool"; do if (echo evil > "$d/evil-$2") 2>/dev/null; then echo "$2 WROTE $d"; else echo "$2 could not write $d"; fi; done'


def workflow(cache_dir: Path) -> dict:
    def tries(who: str) -> str:
        return f"/bin/sh -c '{TRY_WRITE}' sh {cache_dir} {who}"

    agent = f"printf '# Plan\\n\\nx\\n' > plan.md; echo 'def x(): pass' > x.py; {tries('agent')}"
    return {
        "hooks": {
            "setup": {"run": SETUP, "timeout": 60, "cache": [".cache/tool"], "cache_key": ["requirements.txt"]},
            "before_stage": tries("before_stage"),
        },
        "test_command": {"run": tries("test_command"), "timeout": 60},
        "stages": [
            {"name": "building", "provider": "command", "timeout": 60, "max_attempts": 1, "options": {"argv": ["/bin/sh", "-c", agent]}},
            {"name": "pr_creation"},
        ],
    }


def run_task(repository: Repository, number: int) -> Task:
    task, _ = services.task_create(repository=repository, issue_number=number, title=f"Task {number}", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    return jobs.task_run_inline(task=task)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_second_task_hits_the_setup_cache_and_nothing_but_setup_writes_it(local_repository, origin_and_clone, client, django_user_model):
    _, clone = origin_and_clone
    (clone / "requirements.txt").write_text("tinypkg==1.0\n")
    key = setup_cache.key_for(hook(cache_key=("requirements.txt",)), clone).name
    cache_dir = setup_cache.root(local_repository.pk) / key
    conftest.commit_workflow(clone, yaml.safe_dump(workflow(cache_dir)))

    first = run_task(local_repository, 1)
    assert first.status == Task.Status.SUCCEEDED, first.status_reason
    setup = AgentEvent.objects.get(task=first, data__hook="setup", data__status="passed").data
    assert "pip-cache empty" in setup["output"] and "tool-cache kept" not in setup["output"]
    assert setup["cache"]["state"] == "miss" and setup["cache"]["key"] == key and setup["cache"]["files"] == ["requirements.txt"]
    assert setup["cache"]["bytes"] > 0

    second = run_task(local_repository, 2)
    assert second.status == Task.Status.SUCCEEDED, second.status_reason
    setup = AgentEvent.objects.get(task=second, data__hook="setup", data__status="passed").data
    assert f"pip-cache kept: from task {first.pk}" in setup["output"] and "tool-cache kept" in setup["output"]
    assert setup["cache"]["state"] == "hit" and setup["cache"]["key"] == key

    # Only setup wrote it: the agent, before_stage and the test command could not.
    outputs = " ".join(str(data) for data in AgentEvent.objects.filter(task__in=[first, second]).values_list("data", flat=True))
    for who in ("agent", "before_stage", "test_command"):
        assert f"{who} could not write {cache_dir}/pip" in outputs and f"{who} could not write {cache_dir}/home/.cache/tool" in outputs, who
        assert f"{who} WROTE" not in outputs
    assert sorted(p.name for p in (cache_dir / "pip").iterdir()) == ["seen"] and not list(cache_dir.rglob("evil-*"))

    client.force_login(grant(django_user_model.objects.create_user("viewer", "v@example.com", "pw-pw-pw-pw"), "view_task"))
    page = client.get(f"/tasks/{second.pk}/").content.decode()
    assert f"setup cache <strong>hit</strong> · key <code>{key}</code> (hash of requirements.txt)" in page, page
