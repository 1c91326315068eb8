"""Folders a command writes into: one process at a time, and never over what it did not write.

* :class:`FolderLock`: an exclusive lock on ``<folder>/.lock``, held while a process trains
  into a run folder (``waveunet train``) or writes a report into an ``out_dir`` (``waveunet
  evaluate``). The kernel drops it when its holder ends in any way (SIGKILL included), so a
  lock is never stale; a second process gets :class:`FolderInUse`, naming the holder's PID.
  :func:`held_folder` makes a folder, locks it for the time of a ``with`` block and tidies up
  after (the lock file, the folders it made if they stayed empty).
* :func:`guard_out_dir`: the one output-folder guard, before any work: ``waveunet evaluate``
  (files of an earlier report are replaced only with ``overwrite=true``), the experiments (files
  of an earlier call of the same experiment are replaced, nothing else), and a new training
  run's folder (one that holds a run is refused).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, WaveUNetError, space_checked
from .files import FILE_MODE, remove_stale_temporaries

LOCK_NAME = ".lock"


class FolderInUse(WaveUNetError):
    """Another process holds this folder's :class:`FolderLock` (training or evaluating into it)."""


class FolderLock:
    """An exclusive ``flock`` on ``<folder>/.lock``, which holds the holder's PID: one process
    at a time trains into a run folder (``waveunet train``) or writes a report into an
    ``out_dir`` (``waveunet evaluate``).

    :meth:`acquire` raises :class:`FolderInUse` when another process holds it. A run that
    is refused right after taking the lock leaves the folder as it found it
    (:meth:`release` with ``undo``: the file removed if this lock made it, else its former
    content back); ``remove`` takes the file away (a folder that is not a run's).
    """

    def __init__(self, run_dir: Path, fd: int, before: bytes | None):
        self.path, self._fd, self._before = Path(run_dir) / LOCK_NAME, fd, before

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike, otherwise: str = "start a new run") -> FolderLock:
        """Take the lock of ``run_dir`` (which must exist); ``otherwise``: what a refused user
        may do instead of waiting, for the message."""
        path = Path(run_dir) / LOCK_NAME
        while True:
            with space_checked(path):
                fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                who = f"process {holder}" if holder.isdigit() else "another process"
                raise FolderInUse(
                    f"{run_dir} is in use by {who}, which is writing into it (it holds {path}); "
                    f"wait until it ends or stop it, or {otherwise}") from None
            if _same_file(fd, path):
                break
            os.close(fd)  # its holder removed the file meanwhile: lock the one there now
        before = os.pread(fd, 32, 0) if os.fstat(fd).st_size else None
        _write_pid(fd, f"{os.getpid()}\n".encode())  # a process refused finds the holder's PID
        return cls(Path(run_dir), fd, before)

    def release(self, undo: bool = False, remove: bool = False) -> None:
        """Let go; ``undo``: first leave the lock file as :meth:`acquire` found it; ``remove``:
        first remove it."""
        if self._fd is None:
            return
        if remove or (undo and self._before is None):
            self.path.unlink(missing_ok=True)  # while locked: see _same_file
        elif undo:
            _write_pid(self._fd, self._before)
        os.close(self._fd)  # closing drops the flock
        self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path``. A process that opened the lock file just
    before its holder removed it locks a file no one else will open; it must lock the new one
    instead, or two processes would both hold "the" lock."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _write_pid(fd: int, text: bytes) -> None:
    try:  # only the holder writes
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
    except OSError:
        pass  # the PID is for the message only; the lock is what counts


@contextmanager
def held_folder(folder: Path, *, setting: str, otherwise: str,
                sweep: Sequence[str] = ()) -> Iterator[None]:
    """``folder`` for this process alone, for the time of the ``with`` block.

    The folder is made if missing and locked (:class:`FolderLock`: a second process is refused
    in one line naming the holder's PID, and ``otherwise``, what it may do instead);
    temporaries of killed processes there and in its ``sweep`` subfolders are removed. On the
    way out the lock file goes, and so do the folders made here if nothing was written into
    them. A ``folder`` that is a file is a ConfigError naming ``setting``.
    """
    try:
        check_folder(folder)
    except FileExistsError as exc:
        raise ConfigError(f"{setting}: {exc}") from None
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        try:
            lock = _made_and_locked(folder, otherwise)
        except FileNotFoundError:  # a process that ended meanwhile removed its empty folder
            lock = _made_and_locked(folder, otherwise)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        for path in (folder, *(folder / d for d in sweep)):
            remove_stale_temporaries(path)
        yield
    finally:
        lock.release(remove=True)
        _remove_empty(made)


def _made_and_locked(folder: Path, otherwise: str) -> FolderLock:
    with space_checked(folder):
        folder.mkdir(parents=True, exist_ok=True)
    return FolderLock.acquire(folder, otherwise=otherwise)


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


# --------------------------------------------------------------------------------------------
# The output-folder guard
# --------------------------------------------------------------------------------------------


ONLY_OURS = "only our own files"
OVERWRITE_CLEARS = "overwrite=true clears ours"
NONE_OF_OURS = "none of ours"


def check_folder(out: Path) -> bool:
    """Whether ``out`` is a folder already (False: none yet).

    Raises:
        FileExistsError: ``out`` exists and is not a directory.
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    return out.is_dir()


def guard_out_dir(out: Path, ours: Callable[[Path], Sequence[str]], policy: str, *,
                  allowed: bool = False, what: str, setting: str,
                  instead: str = "") -> list[str]:
    """Refuse, in one line naming ``out``, to write into it where ``policy`` forbids it.

    Args:
        out: the output folder (it need not exist).
        ours: the names of the command's files now in the folder, given the folder.
        policy: :data:`ONLY_OURS` (an experiment's folder), :data:`OVERWRITE_CLEARS` (an
            evaluation's) or :data:`NONE_OF_OURS` (a new training run's: refused whenever
            files of ours are there).
        allowed: ONLY_OURS: an earlier call of this command wrote them; OVERWRITE_CLEARS:
            ``overwrite=true`` was given.
        what: who wrote them (ONLY_OURS, e.g. "`waveunet compare`") or what they are
            (OVERWRITE_CLEARS and NONE_OF_OURS, e.g. "an evaluation"), for the message.
        setting: the setting that names another folder (``compare.out_dir``, ``out_dir=...``).
        instead: NONE_OF_OURS: what to do instead, for the message.

    Returns:
        The names of ours present (none where the folder does not exist yet): what an
        OVERWRITE_CLEARS caller may clear.

    Raises:
        FileExistsError: ``out`` is a file, or holds files of ours ``policy`` does not let
            this call replace.
    """
    if policy not in (ONLY_OURS, OVERWRITE_CLEARS, NONE_OF_OURS):
        raise ValueError(f"unknown out_dir policy {policy!r}")
    present = list(ours(out)) if check_folder(out) else []
    if present and (policy == NONE_OF_OURS or not allowed):
        if policy == NONE_OF_OURS:
            raise FileExistsError(f"{out} already holds {what} ({', '.join(present)}); "
                                  f"{instead}")
        if policy == ONLY_OURS:
            raise FileExistsError(f"{out} holds {', '.join(present)} not written by {what}; "
                                  f"choose another {setting}")
        raise FileExistsError(f"{out} already holds {what} ({', '.join(present)}); choose "
                              f"another {setting} or set overwrite=true")
    return present
