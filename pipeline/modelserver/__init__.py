"""Scripted model server (docstring to be completed)."""

from .script import Script, ScriptError, load_script
from .server import ScriptedModelServer

__all__ = ["Script", "ScriptError", "ScriptedModelServer", "load_script"]
