"""A training run's folder: which one a run writes into, one process at a time, and what may
change when a run is continued.

* :func:`run_dir_for`: a new timestamped folder, or the run that ``trainer.resume`` names;
  :func:`check_new_run_dir`: a folder the user names for a new run must not hold one.
* :class:`RunLock`: an exclusive lock on ``<run>/.lock``, held while a process trains into the
  folder (and by ``waveunet evaluate`` on its ``out_dir``). The kernel drops it when its holder
  ends in any way (SIGKILL included), so a lock is never stale; a second process gets
  :class:`RunFolderInUse`, naming the holder's PID.
* :func:`refused_changes`: the rule for continuing a run (:func:`resume_differences`) and for
  ``waveunet compare`` reusing one. The run's config and the config now go through
  :func:`waveunet.config.meaning_changes`: only :data:`~waveunet.config.RESUME_ALLOWED` may
  differ, and a dataset root when the tracks there are the ones the run was trained on.
* :func:`truncate_metrics`: ``metrics.jsonl`` cut back to a checkpoint's step, atomically, so a
  resumed run does not repeat the steps between its last checkpoint and the kill.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import RESUME_ALLOWED, config_differences, meaning_changes
from .errors import ConfigError, WaveUNetError, space_checked
from .files import FILE_MODE, atomic_write_text

LOCK_NAME = ".lock"
METRICS_NAME = "metrics.jsonl"


class RunFolderInUse(WaveUNetError):
    """Another process holds this folder's :class:`RunLock` (training or evaluating into it)."""


def resume_mode(value: Any) -> str | Path | None:
    """``trainer.resume``: None (start fresh), ``"latest"`` (the newest run of this name) or a
    run folder."""
    if value in (False, None, "", "false", "False"):
        return None
    if value in (True, "true", "True"):
        return "latest"
    return Path(str(value))


def run_dir_for(runs_root: str, name: str, resume: Any) -> str:
    """Where a run writes: a new timestamped folder, or the run being resumed.

    ``resume`` false: ``<runs_root>/<name>/<timestamp>``; true: the newest run of
    that name that has a ``last.pt`` (a new folder if there is none); a path: that
    run directory. Nothing is created.
    """
    mode = resume_mode(resume)
    if mode == "latest":
        base = Path(runs_root) / name
        candidates = sorted(p.parent for p in base.glob("*/last.pt")) if base.is_dir() else []
        if candidates:
            return str(candidates[-1])
    elif mode is not None:
        return str(mode)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    path = Path(runs_root) / name / stamp
    suffix = 1
    while path.exists():  # two runs started in the same second
        path = Path(runs_root) / name / f"{stamp}_{suffix}"
        suffix += 1
    return str(path)


def claim_new_run_dir(path: Path) -> Path:
    """Create ``path``, a new run's folder; when another run took that name meanwhile, the
    next free ``<path>_<n>``. Returns the folder made."""
    candidate, n = Path(path), 1
    while True:
        try:
            with space_checked(candidate):
                candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            candidate, n = candidate.with_name(f"{Path(path).name}_{n}"), n + 1


# What a folder that holds a run has (``.hydra/``: Hydra's record of the run's config).
RUN_FILES = ("last.pt", "best.pt", METRICS_NAME, ".hydra")


def check_new_run_dir(path: Path, setting: str = "hydra.run.dir") -> None:
    """Refuse a folder given for a *new* run that already holds one: training there would
    append to its ``metrics.jsonl`` and replace its checkpoints."""
    held = [name for name in RUN_FILES if (Path(path) / name).exists()]
    if held:
        raise ConfigError(
            f"{setting}={path} already holds a run ({', '.join(held)}); a new run there would "
            f"mix its logs and replace its checkpoints. Continue it with trainer.resume={path}, "
            "or choose another folder")


class RunLock:
    """An exclusive ``flock`` on ``<folder>/.lock``, which holds the holder's PID: one process
    at a time trains into a run folder (``waveunet train``) or writes a report into an
    ``out_dir`` (``waveunet evaluate``).

    :meth:`acquire` raises :class:`RunFolderInUse` when another process holds it. A run that
    is refused right after taking the lock leaves the folder as it found it
    (:meth:`release` with ``undo``: the file removed if this lock made it, else its former
    content back); ``remove`` takes the file away (a folder that is not a run's).
    """

    def __init__(self, run_dir: Path, fd: int, before: bytes | None):
        self.path, self._fd, self._before = Path(run_dir) / LOCK_NAME, fd, before

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike, otherwise: str = "start a new run") -> RunLock:
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
                raise RunFolderInUse(
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


def refused_changes(saved: Mapping, now: Mapping) -> list[str]:
    """The keys in which ``now`` differs from a run's config ``saved`` in a way that forbids
    continuing the run (``trainer.resume``) or reusing it (``waveunet compare``): every
    difference but those under :data:`~waveunet.config.RESUME_ALLOWED`, and a dataset root
    whose new folder does not hold the training songs the old root's cache records
    (:func:`waveunet.data.same_tracks_at_new_root`: a dataset that was moved may change root).
    """
    from . import data as data_lib

    model = now.get("model", {})
    shape = dict(sample_rate_hz=int(model.get("sample_rate_hz", 0)),
                 channels=int(model.get("channels", 0)), sources=list(model.get("sources", [])))

    def same_root(setting: str):
        return lambda _old, _new: data_lib.same_tracks_at_new_root(
            saved.get("data"), now.get("data"), setting, **shape)

    equivalent = {key: same_root(setting) for key, setting in _roots(now).items()}
    return meaning_changes(saved, now, RESUME_ALLOWED, equivalent)


def _roots(cfg: Mapping) -> dict[str, str]:
    """``{"data[.datasets.<name>].root": "data[.datasets.<name>]"}`` of a run's config."""
    return {f"{d.setting}.root": d.setting for d in _datasets(cfg.get("data"))}


def resume_differences(run_dir: Path, saved: Mapping, now: Mapping) -> dict[str, dict[str, Any]]:
    """The differences between a run's config (``saved``, as its checkpoint recorded it) and
    the config now, when resuming allows all of them: ``{key: {"run": value, "now": value}}``.

    Raises ConfigError naming the keys (and values) of the differences that change the run's
    meaning (:func:`refused_changes`).
    """
    roots = _roots(now)
    refused = refused_changes(saved, now)
    differences = config_differences({"run": saved, "now": now})
    if refused:
        shown = "; ".join(f"{k} (run: {_show(differences[k]['run'])}, now: "
                          f"{_show(differences[k]['now'])})" for k in refused[:6])
        more = f" and {len(refused) - 6} more" if len(refused) > 6 else ""
        root_note = (" (a dataset root may change only when the tracks there are the ones "
                     "the run's cache holds: same names, sizes and times)"
                     if any(k in roots for k in refused) else "")
        raise ConfigError(
            f"trainer.resume={run_dir}: the run was trained with other settings: {shown}{more}"
            f"{root_note}. Resuming may change only {', '.join(RESUME_ALLOWED)} and data.root; "
            "start a new run for other settings")
    return differences


def _datasets(data_cfg: Any) -> list:
    from .data import data_spec

    try:
        return list(data_spec(data_cfg).datasets) if data_cfg is not None else []
    except ConfigError:
        return []


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the records of ``path`` (``metrics.jsonl``) up to ``step``, atomically; a line cut
    by a kill goes too. Returns how many lines were dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) > step:
            dropped += 1
        else:
            kept.append(line + "\n")
    if dropped or not path.read_bytes().endswith(b"\n"):
        with space_checked(path):
            atomic_write_text(path, "".join(kept))
    return dropped
