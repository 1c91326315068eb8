"""A training run's folder: which one a run writes into, and what may change when a run is
continued.

* :func:`run_dir_for`: a new timestamped folder, or the run that ``trainer.resume`` names;
  :func:`claim_new_run_dir` makes a new one; :func:`check_new_run_dir`: a folder the user
  names for a new run must not hold one (:func:`waveunet.folders.guard_out_dir`). While a
  process trains into the folder it holds its :class:`waveunet.folders.FolderLock`.
* :func:`refused_changes`: the rule for continuing a run (:func:`resume_differences`) and for
  ``waveunet compare`` reusing one. The run's config and the config now go through
  :func:`waveunet.settings.compose.meaning_changes`: only
  :data:`~waveunet.settings.compose.RESUME_ALLOWED` may differ, and a dataset root when the
  tracks there are the ones the run was trained on.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, space_checked
from ..folders import NONE_OF_OURS, guard_out_dir
from ..settings.compose import RESUME_ALLOWED, config_differences, meaning_changes
from .run_log import METRICS_NAME


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
    try:
        guard_out_dir(Path(path), lambda folder: [n for n in RUN_FILES if (folder / n).exists()],
                      NONE_OF_OURS, what="a run", setting=setting,
                      instead="a new run there would mix its logs and replace its checkpoints. "
                              f"Continue it with trainer.resume={path}, or choose another folder")
    except FileExistsError as exc:
        raise ConfigError(f"{setting}={exc}") from None


def refused_changes(saved: Mapping, now: Mapping) -> list[str]:
    """The keys in which ``now`` differs from a run's config ``saved`` in a way that forbids
    continuing the run (``trainer.resume``) or reusing it (``waveunet compare``): every
    difference but those under :data:`~waveunet.settings.compose.RESUME_ALLOWED` and a
    dataset's cache folder, and a dataset root whose new folder does not hold the training songs
    the old root's cache records (:func:`waveunet.data.same_tracks_at_new_root`: a dataset that
    was moved may change root).
    """
    from .. import data as data_lib

    model = now.get("model", {})
    shape = dict(sample_rate_hz=int(model.get("sample_rate_hz", 0)),
                 channels=int(model.get("channels", 0)), sources=list(model.get("sources", [])))

    def same_root(setting: str):
        return lambda _old, _new: data_lib.same_tracks_at_new_root(
            saved.get("data"), now.get("data"), setting, **shape)

    equivalent = {key: same_root(setting) for key, setting in _roots(now).items()}
    for dataset in _datasets(now.get("data")):  # a combined config's entries have their own
        equivalent[f"{dataset.setting}.cache_dir"] = lambda _old, _new: True
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
    from ..data import data_spec

    try:
        return list(data_spec(data_cfg).datasets) if data_cfg is not None else []
    except ConfigError:
        return []


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
