"""The one output-folder guard of the commands that write a report folder.

``waveunet evaluate`` (:func:`waveunet.reporting.evaluation.prepare_out_dir`) and the
experiments (``waveunet compare``, ``waveunet saturation``: ``Experiment.guard``) call
:func:`guard_out_dir` before any work; they differ only in the policy for files of theirs that
are there already:

* :data:`ONLY_OURS` -- they are replaced where an earlier call of the same command wrote them
  (its results JSON says so), and refused otherwise;
* :data:`OVERWRITE_CLEARS` -- they are refused unless ``overwrite=true``, with which the caller
  clears the stale ones before it writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

ONLY_OURS = "only our own files"
OVERWRITE_CLEARS = "overwrite=true clears ours"


def check_folder(out: Path) -> bool:
    """Whether ``out`` is a folder already (False: none yet).

    Raises:
        FileExistsError: ``out`` exists and is not a directory.
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    return out.is_dir()


def guard_out_dir(out: Path, ours: Callable[[Path], Sequence[str]], policy: str, *,
                  allowed: bool, what: str, setting: str) -> list[str]:
    """Refuse, in one line naming ``out``, to write into it where ``policy`` forbids it.

    Args:
        out: the output folder (it need not exist).
        ours: the names of the command's files now in the folder, given the folder.
        policy: :data:`ONLY_OURS` or :data:`OVERWRITE_CLEARS`.
        allowed: ONLY_OURS: an earlier call of this command wrote them; OVERWRITE_CLEARS:
            ``overwrite=true`` was given.
        what: who wrote them (ONLY_OURS, e.g. "`waveunet compare`") or what they are
            (OVERWRITE_CLEARS, e.g. "an evaluation"), for the message.
        setting: the setting that names another folder (``compare.out_dir``, ``out_dir=...``).

    Returns:
        The names of ours present (none where the folder does not exist yet): what an
        OVERWRITE_CLEARS caller may clear.

    Raises:
        FileExistsError: ``out`` is a file, or holds files of ours ``policy`` does not let
            this call replace.
    """
    if policy not in (ONLY_OURS, OVERWRITE_CLEARS):
        raise ValueError(f"unknown out_dir policy {policy!r}")
    present = list(ours(out)) if check_folder(out) else []
    if present and not allowed:
        if policy == ONLY_OURS:
            raise FileExistsError(f"{out} holds {', '.join(present)} not written by {what}; "
                                  f"choose another {setting}")
        raise FileExistsError(f"{out} already holds {what} ({', '.join(present)}); choose "
                              f"another {setting} or set overwrite=true")
    return present
