"""Writing files safely: a reader (or a crash) never sees a half-written file.

Everything waveunet writes for users (stems, checkpoints, reports, figures)
goes to a temporary file in the target's folder and is renamed into place, so
an interrupted run leaves either the old file or the new one.

Every temporary is tagged with the writing process's id
(``.<name>.pid<PID>.<random>.tmp<ext>``, :func:`temporary_next_to`). A process
killed with SIGKILL (or a machine that lost power) cannot clean up, so the next run
into the same folder calls :func:`remove_stale_temporaries`, which removes the
tagged temporaries whose process is gone and keeps those of live processes (a
second run writing into the same folder at the same time). The decoded-audio
cache's temporaries (``.<name>.pid<PID>.tmp...``) carry the same tag. Process ids
are those of this machine: a folder shared over a network between machines can see
another machine's live temporary as stale.

:func:`safe_path_component` makes a file or folder name of a track's name;
:func:`safe_filename` is the same rule made stricter for names other systems must take too.

Every JSON file the project writes is strict JSON (NaN and inf become null, tensors and arrays
plain lists): :func:`dumps_json`, written atomically by :func:`write_json`.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK = _umask()
# What a file created with open() gets under this process's umask.
FILE_MODE = 0o666 & ~_UMASK
# What a folder created with mkdir() gets (mkdtemp makes 0700).
DIR_MODE = 0o777 & ~_UMASK
# A temporary of ours: a hidden name with the writer's pid, ".tmp" before any extension.
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


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of our pid-tagged temporaries (see the module docstring)."""
    return _TEMPORARY.match(name) is not None


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the pid-tagged temporaries in ``folder`` (not below it) whose process is gone.

    Returns the removed paths. A missing folder has none; a temporary that vanishes
    meanwhile (its writer renamed it) is skipped, and so is one that cannot be removed.
    """
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or process_alive(int(match.group(1))):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
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
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        interrupt = _interrupt_behind(exc)
        if interrupt is not None and interrupt is not exc:
            # A writer that turned Ctrl-C / SIGTERM into its own error (torch.save's zip writer
            # raises "unexpected pos" when interrupted): the interrupt is what happened.
            raise interrupt from None
        raise
    return path


def _interrupt_behind(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt ``exc`` is, or was raised while handling."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt):
            return exc
        exc = exc.__context__
    return None


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


# Longest component we make, in UTF-8 bytes (file systems allow 255; leave room for a suffix).
MAX_COMPONENT_BYTES = 200


def safe_path_component(name: str) -> str:
    """``name`` as one path component that stays inside its folder, changed as little as can be.

    MUSDB18's spaces, apostrophes, brackets and other printable characters are kept, so the
    stems of a track land in the folder ``waveunet evaluate`` looks for. Replaced by ``_``:
    path separators (``/``, ``\\``), control characters, and leading dots (``..`` would
    leave the folder, ``.`` be the folder itself, and a hidden name would look like one of our
    temporaries). An empty name becomes ``_``; a name longer than
    :data:`MAX_COMPONENT_BYTES` is cut.
    """
    out = "".join("_" if c in "/\\" or ord(c) < 32 or ord(c) == 127 else c for c in name)
    stripped = out.lstrip(".")
    out = "_" * (len(out) - len(stripped)) + stripped
    out = out.encode("utf-8")[:MAX_COMPONENT_BYTES].decode("utf-8", errors="ignore")
    return out or "_"


# Characters a file name cannot hold here or on other systems (Windows, network shares).
UNSAFE_FILENAME_CHARACTERS = frozenset('/\\:*?"<>|')


def safe_filename(name: str) -> str:
    """``name`` as a file name that other systems take too: :func:`safe_path_component` of
    ``name`` with, first, the characters those systems forbid (:data:`UNSAFE_FILENAME_CHARACTERS`)
    and every non-printable one replaced by ``_`` and leading and trailing dots and spaces
    dropped (so never ``.``, ``..`` or hidden; an empty result is ``track``). MUSDB18's names
    keep their spaces, apostrophes and brackets."""
    portable = "".join("_" if c in UNSAFE_FILENAME_CHARACTERS or not c.isprintable() else c
                       for c in name).strip(". ")
    return safe_path_component(portable).rstrip(". ") if portable else "track"


# --------------------------------------------------------------------------------------------
# Strict JSON
# --------------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Numbers, arrays and tensors as plain JSON values; NaN/inf become None (strict JSON).

    Arrays and tensors are told by their type's module, so this module imports neither numpy
    nor torch (a process that only takes a folder lock or writes a file stays light)."""
    library = type(obj).__module__.partition(".")[0]
    if library == "torch" and hasattr(obj, "detach"):  # a tensor (not torch.__version__)
        obj, library = obj.detach().cpu().numpy(), "numpy"
    if library == "numpy" and hasattr(obj, "tolist"):  # arrays and numpy scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def dumps_json(obj: Any) -> str:
    """Strict JSON (no NaN tokens) of :func:`to_jsonable` (obj)."""
    return json.dumps(to_jsonable(obj), indent=2, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON (:func:`dumps_json`), atomically."""
    return atomic_write_text(path, dumps_json(obj))


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON file written earlier, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
