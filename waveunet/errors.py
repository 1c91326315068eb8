"""Errors that reach users as one clear line (the CLI prints them without a traceback)."""


class WaveUNetError(Exception):
    """Base class: the message names the file or setting and what is wrong."""


class ConfigError(WaveUNetError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(WaveUNetError):
    """A dataset, audio file or cache is missing, unreadable or inconsistent."""


class CheckpointError(WaveUNetError):
    """A checkpoint is missing, not a waveunet checkpoint, or from an incompatible version."""
