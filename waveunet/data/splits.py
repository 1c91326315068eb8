"""``load_split``: the tracks of one split, from one dataset or several combined.

A combined data config (``datasets:``) gives each split the union of its datasets'
tracks for that split; each dataset keeps its own root, cache, format and file
mapping, and each track carries its dataset's name, weight and the sampling rule
(:class:`~waveunet.data.Track`). Before anything is decoded, the datasets must
agree on what they provide: every dataset has the model's sources, and the
datasets of a split store their audio at one sample rate. An optional dataset
(``required: false``) whose root is unset is left out with a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .cache import Track, cached_tracks_match, load_tracks
from .find import Found, dataset_root, empty_split_hint, list_tracks, native_rate_hz, select_split
from .spec import (
    SPLITS,
    DatasetSpec,
    DataSpec,
    check_weights,
    data_spec,
    missing_sources,
    source_plan,
)

log = logging.getLogger(__name__)

# The voice task's sources, which the paper trained on MUSDB18 + CCMixter.
VOICE_SOURCES = frozenset({"accompaniment", "vocals"})
# What the presets that combine them (configs/data/musdb*_ccmixter.yaml) are for.
PAPER_VOICE_DATA = "The paper's voice models (M1..M5-HighSR) were trained on MUSDB18 + CCMixter"


@dataclass
class _Planned:
    """One dataset's part of a split, found on disk but not yet decoded."""

    spec: DatasetSpec
    root: Path
    found: list[Found]


def load_split(data_cfg: Any, split: str, *, sample_rate_hz: int, channels: int,
               sources: Sequence[str], progress: bool = True) -> list[Track]:
    """Tracks of one split, decoded once into the cache and memory-mapped from it.

    ``split`` is "train", "valid" (held out from the training songs) or "test". The
    first call decodes every track of the split (progress bar); later calls reuse
    the cache and re-decode only tracks whose source files changed. A combined
    config returns its datasets' tracks one dataset after the other, in config order.
    ``progress`` false hides the decoding bar.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}' (valid: {', '.join(SPLITS)})")
    sources = list(sources)
    if not sources:
        raise ConfigError("no sources requested")
    spec = data_spec(data_cfg)
    datasets = _present_datasets(spec, split)
    _warn_if_voice_on_musdb_alone(spec, split, sources)
    if spec.combined:
        _check_sources_agree(datasets, sources)
    used = [d for d in datasets if split in d.splits]
    if not used:
        raise DataError(f"no dataset of data.datasets gives a '{split}' split "
                        f"({', '.join(f'{d.name}: {list(d.splits)}' for d in datasets)})")
    planned = [_plan(d, split) for d in used]
    if len(planned) > 1:
        _check_rates_agree(planned)
    tracks = []
    for part in planned:
        plan = source_plan(sources, part.spec.stems,
                           f"{part.spec.setting}.format={part.spec.format} at {part.root}")
        loaded = load_tracks(part.spec, part.root, part.found, plan, split=split,
                             sample_rate_hz=sample_rate_hz, channels=channels, sources=sources,
                             progress=progress)
        for track in loaded:
            track.dataset, track.weight = part.spec.name, part.spec.weight
            track.sampling = spec.sampling
        tracks.extend(loaded)
    if int(os.environ.get("RANK", "0")) == 0:  # one line per split, from one process
        log.info("%s", split_summary(spec, split, tracks))
    return tracks


def same_tracks_at_new_root(saved_data: Any, now_data: Any, setting: str, *,
                            sample_rate_hz: int, channels: int, sources: Sequence[str]) -> bool:
    """Whether the dataset at ``setting`` (``data`` or ``data.datasets.<name>``), whose root
    differs between two data configs, holds the same training songs at its new root as the old
    root's cache records (:func:`~waveunet.data.cache.cached_tracks_match`): a dataset that was
    moved. A generated or downloaded dataset (its root follows from the cache folder) is the
    same at any root when its settings are: its tracks follow from them.
    """
    def entry(cfg: Any) -> DatasetSpec | None:
        return next((d for d in data_spec(cfg).datasets if d.setting == setting), None)

    try:
        old, new = entry(saved_data), entry(now_data)
        if old is None or new is None or not old.root_is_set or old.format != new.format:
            return False
        if new.format in ("synthetic", "preview"):
            return old.synthetic == new.synthetic
        new_root = dataset_root(new)
        found = list_tracks(new, new_root, "train")
    except (ConfigError, DataError):
        return False
    return cached_tracks_match(old, Path(str(old.root)).expanduser(), new, new_root, found,
                               sample_rate_hz=sample_rate_hz, channels=channels, sources=sources)


def _present_datasets(spec: DataSpec, split: str) -> list[DatasetSpec]:
    """The datasets with a root; optional ones without are left out, with a warning."""
    present, left_out = [], []
    for dataset in spec.datasets:
        from_env = dataset.format == "musdb" and os.environ.get("MUSDB_PATH")  # as dataset_root
        if dataset.root_is_set or from_env:
            present.append(dataset)
        elif dataset.required:
            dataset_root(dataset)  # the error that names the missing root, before any warning
        else:
            left_out.append(dataset)
    for dataset in left_out:
        if split in dataset.splits:
            hint = f" {dataset.hint}" if dataset.hint else ""
            log.warning("%s is not set: the '%s' split leaves out the %s dataset.%s",
                        dataset.key("root"), split, dataset.name, hint)
    if split == "train":
        check_weights(present)  # e.g. the others at weight 0, and the one weighted left out
    if not present:
        raise ConfigError("no dataset of data.datasets has a root set "
                          f"({', '.join(d.key('root') for d in spec.datasets)})")
    return present


def _warn_if_voice_on_musdb_alone(spec: DataSpec, split: str, sources: Sequence[str]) -> None:
    """A voice model trained on one MUSDB18 dataset: the warning the combined presets give when
    their CCMixter root is unset (:func:`_present_datasets`), with the preset that adds it."""
    (dataset, *others) = spec.datasets
    if split != "train" or others or set(sources) != VOICE_SOURCES \
            or dataset.format not in ("musdb", "musdb_hq"):
        return
    log.warning("data.format=%s: the voice model (%s) trains on MUSDB18 alone. %s; "
                "data=%s_ccmixter data.ccmixter_root=/path/to/ccmixter (or $CCMIXTER_PATH) "
                "trains on both.", dataset.format, ", ".join(sources), PAPER_VOICE_DATA,
                dataset.format)


def _plan(spec: DatasetSpec, split: str) -> _Planned:
    root = dataset_root(spec)
    found = list_tracks(spec, root, "test" if split == "test" else "train")
    n_train = len(found)
    if split != "test":
        found = select_split(found, split, spec, root)
    if not found:
        hint = empty_split_hint(spec, root, n_train) if split == "valid" else ""
        raise DataError(f"split '{split}' of the {spec.format} dataset at {root} has no "
                        f"tracks{hint}")
    return _Planned(spec, root, found)


def _check_sources_agree(datasets: list[DatasetSpec], sources: list[str]) -> None:
    lacking = {d.name: missing_sources(sources, d.stems) for d in datasets}
    if not any(lacking.values()):
        return
    each = "; ".join(
        f"{d.name} has {', '.join(d.stems)}"
        + (f" (no {', '.join(lacking[d.name])})" if lacking[d.name] else " (all of them)")
        for d in datasets)
    raise ConfigError(
        f"the datasets of data.datasets disagree on sources: the model wants {', '.join(sources)}; "
        f"{each}. Train on datasets that all have them ('accompaniment' is derived from "
        "the non-vocal stems), e.g. data=musdb for four sources")


def _check_rates_agree(planned: list[_Planned]) -> None:
    """Datasets stored at different rates would mix bandwidths in one training set: refused."""
    rates = {p.spec.name: (native_rate_hz(p.found[0]), p.found[0]) for p in planned}
    if len({rate for rate, _ in rates.values()}) == 1:
        return
    each = "; ".join(f"{name} {rate} Hz ({sorted(f.files.values())[0]})"
                     for name, (rate, f) in rates.items())
    raise ConfigError(f"the datasets of data.datasets disagree on sample rate: {each}. "
                      "Combine datasets stored at one rate (resample one of them beforehand)")


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def split_summary(spec: DataSpec, split: str, tracks: list[Track]) -> str:
    """One line: tracks and duration per dataset; for training from several datasets, the
    share of examples each one gets (approximately: by seconds or tracks, times weight)."""
    names = list(dict.fromkeys(t.dataset for t in tracks))
    parts, mass = [], {}
    for name in names:
        mine = [t for t in tracks if t.dataset == name]
        seconds = sum(t.samples / t.sample_rate_hz for t in mine)
        plural = "s" if len(mine) != 1 else ""
        parts.append(f"{name} {len(mine)} track{plural} {_duration(seconds)}")
        per_track = spec.sampling == "per_track"
        mass[name] = mine[0].weight * (len(mine) if per_track else seconds)
    line = f"data {spec.name}, {split}: {', '.join(parts)}"
    total = sum(mass.values())
    if split == "train" and len(names) > 1 and total > 0:
        shares = ", ".join(f"{name} {100 * m / total:.0f}%" for name, m in mass.items())
        line += f"; examples drawn {spec.sampling.replace('_', ' ')}: {shares}"
    return line
