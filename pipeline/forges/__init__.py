"""Forges: where code lives and PRs/MRs are opened (see `base` for the contract). Importing
this package registers every forge kind."""

from . import github, gitlab  # noqa: F401  (registers "github", "gitlab")
from .base import CAPABILITIES, FORGES, Forge, ForgeError, forge_for, forge_named, forget_instances, register  # noqa: F401
