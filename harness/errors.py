"""Errors ddbench raises for bad input. Each names the file or option and what was expected."""

from __future__ import annotations


class DDBenchError(Exception):
    """Base class: every user-facing failure is one of these and is printed without a traceback."""


class DatasetNotFoundError(DDBenchError, FileNotFoundError):
    """A dataset's files are missing or unreadable; the message names the path and the layout."""


class FormatError(DDBenchError, ValueError):
    """A file exists but does not hold what its format promises (truncated, wrong keys, NaN...)."""


class ConfigError(DDBenchError, ValueError):
    """An option, budget, spec or combination of settings that cannot be honoured."""
