"""Writing files safely: a reader (or a crash) never sees a half-written file.

Everything waveunet writes for users (stems, checkpoints, reports, figures)
goes to a temporary file in the target's folder and is renamed into place, so
an interrupted run leaves either the old file or the new one. Temporaries carry the
writer's process id (``.<stem>.pid<PID>.<random>.tmp<ext>``, as the decoded-audio cache's
do), so that the next run into a folder can remove those of processes that are gone
(:func:`remove_stale_temporaries`): a SIGKILL leaves no chance to clean up.
:func:`safe_filename` makes a file name of a track's name.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK = _umask()
# What a file created with open() gets under this process's umask.
FILE_MODE = 0o666 & ~_UMASK
# What a folder created with mkdir() gets (mkdtemp makes 0700).
DIR_MODE = 0o777 & ~_UMASK
# One of our temporaries: a hidden name with the writer's pid, ".tmp" before any extension.
_TEMPORARY = re.compile(r"^\..*\.pid(\d+)\.(?:.*\.)?tmp(?:\.[^.]*)?$")


def temporary_next_to(path: str | os.PathLike) -> Path:
    """An empty temporary file in ``path``'s folder, tagged with this process's id, that keeps
    ``path``'s extension.

    Give it :data:`FILE_MODE` (``os.chmod``) before renaming it into place.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.pid{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    return Path(tmp)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return pid > 0


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the pid-tagged temporaries in ``folder`` (not below it) whose process is gone;
    returns them. Those of live processes (another writer into the same folder) stay."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass  # renamed into place or removed meanwhile
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then rename the temporary file to ``path``.

    The temporary file keeps ``path``'s extension (writers such as matplotlib
    pick the format from it) and gets the permissions of a normally created file
    (``mkstemp`` alone would leave it readable by its owner only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(temporary_next_to(path))
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


# Characters a file name cannot hold here or on other systems (Windows, network shares).
UNSAFE_FILENAME_CHARACTERS = frozenset('/\\:*?"<>|')


def safe_filename(name: str) -> str:
    """``name`` as one file name: path separators, characters other systems forbid and control
    characters replaced by ``_``; leading and trailing dots and spaces dropped (so never ``.``,
    ``..`` or hidden). MUSDB18's names keep their spaces, apostrophes and brackets."""
    keep = "".join("_" if c in UNSAFE_FILENAME_CHARACTERS or not c.isprintable() else c
                   for c in name).strip(". ")
    return keep or "track"
