"""Writing files safely: a reader (or a crash) never sees a half-written file.

Everything waveunet writes for users (stems, checkpoints, reports, figures)
goes to a temporary file in the target's folder and is renamed into place, so
an interrupted run leaves either the old file or the new one. The decoded-audio
cache has its own pid-tagged temporaries (``data.py``) so that stale ones from
dead processes can be recognised and removed. :func:`safe_filename` makes a file name of a
track's name.
"""

from __future__ import annotations

import os
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


def temporary_next_to(path: str | os.PathLike) -> Path:
    """An empty temporary file in ``path``'s folder that keeps its extension.

    Give it :data:`FILE_MODE` (``os.chmod``) before renaming it into place.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    return Path(tmp)


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
