"""Setup cache: the second task's `setup` on one repository, as a share of the first's.

    .venv/bin/python bench/setup_cache.py [--runs 5] [--build-seconds 30]

A sample repository (bare origin on disk) whose workflow is the common Python case of the README:

    toolchains: [python3]
    hooks:
      setup:
        run:
          - python3 -m venv .venv
          - .venv/bin/pip install --index-url http://127.0.0.1:PORT/simple -r requirements.txt
        network: {allow: ["127.0.0.1:PORT"]}
        cache_key: [requirements.txt]

`requirements.txt` names `slowpkg`, served as an sdist by a PEP 503 index on loopback (this
process; nothing leaves the machine). Its in-tree build backend has no build requirements and
sleeps `--build-seconds` while it builds the wheel: it stands for a compiled package (lxml,
numpy, grpcio take minutes to build from source). pip keeps the wheel it built in its cache
(PIP_CACHE_DIR, inside TAC-X's setup cache); the next setup installs that wheel.

Each run clears the repository's setup cache, then runs two tasks in a row through TAC-X (setup
hook in the real sandbox, then a one-line `command` agent, `publish: none`). The setup time is
the setup hook's duration as TAC-X recorded it; the run's figure is second / first. Reported: each
run, then the median of the runs' figures. Target: <= 25 %. A run whose second setup did not hit
the cache fails the script.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tacx_site.settings")

BACKEND = '''
import base64, hashlib, os, time, zipfile
NAME, VERSION = "slowpkg", "1.0"
DIST = f"{NAME}-{VERSION}.dist-info"
METADATA = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n"
WHEEL = "Wheel-Version: 1.0\\nGenerator: slowbackend\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    os.makedirs(os.path.join(metadata_directory, DIST), exist_ok=True)
    for name, text in (("METADATA", METADATA), ("WHEEL", WHEEL)):
        with open(os.path.join(metadata_directory, DIST, name), "w") as fh:
            fh.write(text)
    return DIST


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    time.sleep(BUILD_SECONDS)  # the compile this package stands for
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    files = {f"{NAME}/__init__.py": "BUILT = True\\n", f"{DIST}/METADATA": METADATA, f"{DIST}/WHEEL": WHEEL}
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for path, text in files.items():
            data = text.encode()
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{DIST}/RECORD,,")
        z.writestr(f"{DIST}/RECORD", "\\n".join(record) + "\\n")
    return name
'''


def make_index(base: Path, build_seconds: float) -> Path:
    """A PEP 503 index with one sdist, slowpkg-1.0.tar.gz, whose backend sleeps `build_seconds`."""
    members = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "slowbackend"\nbackend-path = ["."]\n',
        "slowbackend.py": f"BUILD_SECONDS = {build_seconds!r}\n" + BACKEND,
        "slowpkg/__init__.py": "BUILT = False\n",
        "PKG-INFO": "Metadata-Version: 2.1\nName: slowpkg\nVersion: 1.0\n",
    }
    index = base / "index"
    (index / "simple" / "slowpkg").mkdir(parents=True)
    with tarfile.open(index / "slowpkg-1.0.tar.gz", "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"slowpkg-1.0/{name}")
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    (index / "simple" / "slowpkg" / "index.html").write_text('<a href="../../slowpkg-1.0.tar.gz">slowpkg-1.0.tar.gz</a>\n')
    return index


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(directory: Path) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def make_repository(base: Path, port: int) -> Path:
    """A clone (with a bare origin) holding requirements.txt and the workflow above."""
    origin, clone = base / "origin.git", base / "repo"
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@tacx.invalid", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@tacx.invalid"}

    def git(*args: str, cwd: Path = base) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    git("init", "-q", "--bare", "-b", "main", str(origin))
    (clone / ".tac").mkdir(parents=True)
    (clone / "requirements.txt").write_text("slowpkg==1.0\n")
    (clone / ".tac" / "workflow.yaml").write_text(
        f"""toolchains: [python3]
publish: none
hooks:
  setup:
    run:
      - python3 -m venv .venv
      - .venv/bin/pip install --index-url http://127.0.0.1:{port}/simple -r requirements.txt
      - .venv/bin/python -c "import slowpkg; assert slowpkg.BUILT"
    timeout: 900
    network: {{allow: ["127.0.0.1:{port}"]}}
    cache_key: [requirements.txt]
    env: {{PIP_CONFIG_FILE: /dev/null, PIP_DISABLE_PIP_VERSION_CHECK: 1, PIP_NO_INPUT: 1}}
stages:
  - name: planning
    provider: command
    timeout: 60
    options: {{argv: ["/bin/sh", "-c", "printf '# Plan\\\\n\\\\nNothing to do.\\\\n' > plan.md"]}}
"""
    )
    git("init", "-q", "-b", "main", cwd=clone)
    git("add", "-A", cwd=clone)
    git("commit", "-q", "-m", "requirements and workflow", cwd=clone)
    git("remote", "add", "origin", str(origin), cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)
    return clone


def setup_django(tmp: Path) -> None:
    os.environ["TACX_VAR_DIR"] = str(tmp / "var")
    os.environ["TACX_WORKTREE_ROOT"] = str(tmp / "trees")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def one_setup(repository, number: int) -> tuple[float, dict]:
    """Run one task; (the setup hook's duration, its cache record)."""
    from pipeline import jobs, services
    from pipeline.models import AgentEvent, Task

    task, _ = services.task_create(repository=repository, issue_number=number, title=f"Task {number}", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)
    setup = AgentEvent.objects.filter(task=task, data__hook="setup").exclude(data__status="running").last()
    if task.status != Task.Status.SUCCEEDED or setup is None:
        output = setup.data.get("output", "")[-2000:] if setup else ""
        raise SystemExit(f"task {number} did not succeed: {task.status_reason}\n{output}")
    return float(setup.data["duration"]), setup.data.get("cache", {})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--build-seconds", type=float, default=30.0, help="how long slowpkg's wheel takes to build")
    parser.add_argument("--smoke", action="store_true", help="a quick run for CI (tests/test_bench_smoke.py): a 1 s build, one run")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.build_seconds = 1, 1.0
    with tempfile.TemporaryDirectory(prefix="tacx-bench-") as tmpdir:
        tmp = Path(tmpdir)
        setup_django(tmp)
        from pipeline import setup_cache
        from pipeline.models import Repository

        server = serve(make_index(tmp, args.build_seconds))
        try:
            clone = make_repository(tmp, server.server_address[1])
            repository = Repository.objects.create(kind="local", full_name="bench-setup-cache", local_path=str(clone), default_branch="main")
            ratios, firsts, seconds = [], [], []
            for run in range(args.runs):
                setup_cache.clear(repository.pk)
                first, first_cache = one_setup(repository, 2 * run + 1)
                second, second_cache = one_setup(repository, 2 * run + 2)
                if first_cache.get("state") != "miss" or second_cache.get("state") != "hit":
                    raise SystemExit(f"run {run + 1}: expected a miss then a hit, got {first_cache} then {second_cache}")
                firsts.append(first)
                seconds.append(second)
                ratios.append(second / first)
                size = second_cache.get("bytes", 0) / 1e3
                print(f"run {run + 1}: first setup {first:.2f} s (miss), second {second:.2f} s (hit, cache {size:.0f} kB): {100 * second / first:.1f} %", flush=True)
        finally:
            server.shutdown()
    print(f"\nbuild of slowpkg: {args.build_seconds:g} s; first setup median {statistics.median(firsts):.2f} s, second median {statistics.median(seconds):.2f} s")
    print(f"second setup / first setup: median {100 * statistics.median(ratios):.1f} % over {args.runs} run(s) (target <= 25 %)")


if __name__ == "__main__":
    main()
