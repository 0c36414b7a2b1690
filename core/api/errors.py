"""The one exception hierarchy of medkit: every message says who, what, and how to fix it."""

from __future__ import annotations


class MedkitError(Exception):
    """Base of every error medkit raises on purpose.

    The CLI prints ``str(error)`` as one line and exits non-zero; ``-v`` adds the traceback.
    """


class PluginError(MedkitError):
    """A plugin is broken, missing, or two plugins clash."""


class ConfigError(MedkitError):
    """A configuration value or override is wrong."""


class DataError(MedkitError):
    """Input data cannot be read or has the wrong shape."""


class CheckpointError(MedkitError):
    """A run directory or checkpoint is missing, corrupted or does not match the model."""
