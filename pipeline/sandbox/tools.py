"""The programs the sandbox needs on this machine (node, bubblewrap, socat, ripgrep and the
sandbox-runtime package), found, probed once per process, and reported for /health."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from .policy import SandboxUnavailable, enabled

PACKAGE = "@anthropic-ai/sandbox-runtime"


def _tool(setting: str, name: str) -> str | None:
    configured = settings.TACX.get(setting) or ""
    if configured:
        return configured if os.path.isfile(configured) and os.access(configured, os.X_OK) else None
    return shutil.which(name)


def package_dir() -> Path | None:
    for bin_dir in settings.TACX.get("AGENT_BIN_DIRS", []):
        candidate = Path(bin_dir).parent / PACKAGE
        if (candidate / "package.json").is_file():
            return candidate
    return None


@dataclass(frozen=True)
class Tools:
    node: str
    bwrap: str
    socat: str
    ripgrep: str
    package: Path


_probe_lock = threading.Lock()


_probed: dict[tuple, str] = {}


def tools() -> Tools:
    """The programs the sandbox needs, or SandboxUnavailable naming each one that is missing."""
    found = {
        "node": _tool("SANDBOX_NODE", "node"),
        "bwrap": _tool("SANDBOX_BWRAP", "bwrap"),
        "socat": _tool("SANDBOX_SOCAT", "socat"),
        "ripgrep": _tool("SANDBOX_RIPGREP", "rg"),
    }
    package = package_dir()
    labels = {
        "node": "node (Node.js 20+)",
        "bwrap": "bwrap (Debian package bubblewrap)",
        "socat": "socat (Debian package socat)",
        "ripgrep": "rg (Debian package ripgrep)",
    }
    missing = [labels[name] for name, path in found.items() if not path]
    if package is None:
        missing.append(f"the npm package {PACKAGE} (run `make install`)")
    if missing:
        raise SandboxUnavailable(
            "the agent sandbox cannot be set up: missing " + ", ".join(missing) + " (install them with `make install`, or set TACX_SANDBOX=off to run agents unsandboxed)"
        )
    result = Tools(node=found["node"], bwrap=found["bwrap"], socat=found["socat"], ripgrep=found["ripgrep"], package=package)
    _probe(result)
    return result


def _probe(t: Tools) -> None:
    """bubblewrap must be able to create namespaces here (once per process and tool set)."""
    key = (t.bwrap,)
    with _probe_lock:
        if _probed.get(key) == "ok":
            return
    try:
        proc = subprocess.run(
            [t.bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--dev-bind", "/", "/", "true"],
            capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
        )
        problem = "" if proc.returncode == 0 else (proc.stderr.strip() or f"exit code {proc.returncode}")
    except (OSError, subprocess.SubprocessError) as exc:
        problem = str(exc)
    if problem:
        raise SandboxUnavailable(f"the agent sandbox cannot be set up: bubblewrap ({t.bwrap}) cannot create namespaces here: {problem[-300:]}")
    with _probe_lock:
        _probed[key] = "ok"


def status() -> dict:
    """For /health and the dashboard: the mode and, when required, whether it can be set up."""
    if not enabled():
        return {"mode": "off", "ok": True, "detail": "agents run unsandboxed (TACX_SANDBOX=off)"}
    try:
        tools()
    except SandboxUnavailable as exc:
        return {"mode": "required", "ok": False, "detail": exc.message}
    return {"mode": "required", "ok": True, "detail": "agents run in bubblewrap with a filtering proxy"}
