"""Errors that reach users as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager


class WaveUNetError(Exception):
    """Base class: the message names the file or setting and what is wrong."""


class ConfigError(WaveUNetError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(WaveUNetError):
    """A dataset, audio file or cache is missing, unreadable or inconsistent."""


class CheckpointError(WaveUNetError):
    """A checkpoint is missing, not a waveunet checkpoint, or from an incompatible version."""


class DiskFullError(WaveUNetError):
    """A write failed for lack of space: a full disk, a quota, or the file-size limit.

    ``path`` is the file that could not be written, ``errno`` the OS error number.
    """

    def __init__(self, message: str, path: str | os.PathLike, errno_: int):
        super().__init__(message)
        self.path, self.errno = str(path), errno_

    def __reduce__(self) -> tuple:
        # Pickled whole (from a worker process, e.g. museval's), not from ``args`` alone.
        return type(self), (str(self), self.path, self.errno)


# The errno values that mean "no space for this write", and how to say it.
NO_SPACE = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file-size limit is reached",
}


def no_space_error(exc: BaseException | None) -> OSError | None:
    """The out-of-space ``OSError`` behind ``exc``: itself, or one it was raised from or while
    handling (``torch.save`` reports a failed write as a RuntimeError raised during it)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def space_checked(path: str | os.PathLike) -> Iterator[None]:
    """Turn an out-of-space failure while writing ``path`` into one :class:`DiskFullError` line
    that names it; every other error passes unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        full = no_space_error(exc)
        if full is None:
            raise
        raise disk_full(path, full.errno) from None


def disk_full(path: str | os.PathLike, errno_: int) -> DiskFullError:
    """The one wording of an out-of-space write: the file, and which limit (:data:`NO_SPACE`)."""
    return DiskFullError(f"cannot write {path}: no space ({NO_SPACE[errno_]})", path, errno_)
