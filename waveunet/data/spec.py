"""What a data config says: one dataset, or several named ones combined, read into dataclasses.

A data config (``configs/data/*.yaml``) is either one dataset (``format``, ``root``,
...) or a combined one whose ``datasets`` maps names to such entries. Both are read
here, once, into :class:`DataSpec` / :class:`DatasetSpec`, so every later step uses
checked values and every error names the setting (``data.root``,
``data.datasets.ccmixter.files``, ...). The rules for sources live here too:
which model sources a dataset's stems can provide (:func:`source_plan`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..settings.schema import (
    SPLITS,
    DataLoadingConfig,
    DatasetConfig,
    SyntheticConfig,
    picked,
)

FORMATS = ("musdb", "musdb_hq", "folder", "preview", "synthetic")
MUSDB_STEMS = ("vocals", "drums", "bass", "other")
# Formats whose validation split defaults to MUSDB18's official track names.
MUSDB_FORMATS = ("musdb", "musdb_hq", "preview")
# Where a 'folder' dataset keeps its songs, relative to its root ("." = the root itself).
DEFAULT_SUBSETS = {"train": "train", "test": "test"}
# Settings a combined config's entries take from the top level when they do not set them.
INHERITED = ("cache_dir", "valid_tracks", "valid_fraction", "valid_seed")
_ENTRY_KEYS = frozenset({
    "format", "root", "cache_dir", "stems", "files", "subsets", "splits", "weight", "required",
    "hint", "valid_tracks", "valid_fraction", "valid_seed", "tracks", "test_tracks", "seconds",
    "seed",
})
# An entry's value taken from the data config's top level by a preset's interpolation
# (``root: ${...root}`` under ``datasets.<name>``): errors name that key, the one a user sets.
_FROM_TOP_LEVEL = re.compile(r"\$\{\.\.\.([A-Za-z_]\w*)\}")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """A key of a DictConfig or a plain mapping; a missing or null key gives ``default``."""
    value = cfg.get(key, default) if isinstance(cfg, Mapping) or hasattr(cfg, "get") else default
    return default if value is None else value


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _is_unset(value: Any) -> bool:
    return value is None or str(value) in ("", "???")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a data config, checked. ``setting`` is its config path for messages."""

    name: str
    format: str
    setting: str  # "data" or "data.datasets.<name>"
    root: str | None
    cache_dir: str | None
    stems: tuple[str, ...]  # the dataset's stem names (our names, before the file mapping)
    files: dict[str, str]  # our name -> file name without extension, where they differ
    subsets: dict[str, str | None]  # "train"/"test" -> folder under root (None: has none)
    splits: tuple[str, ...]  # the splits this dataset contributes to
    weight: float
    required: bool
    hint: str
    valid_tracks: list[str] | int | None
    valid_fraction: float
    valid_seed: int
    synthetic: dict[str, Any] = field(default_factory=dict)
    # Settings given at the data config's top level (inherited, or a preset's interpolation):
    # key -> the setting a user sets, e.g. {"root": "data.ccmixter_root"}.
    keys: dict[str, str] = field(default_factory=dict)

    def key(self, name: str) -> str:
        """The setting that gives this dataset's ``name`` (``data.valid_tracks`` where a
        combined config's entry inherits it, else ``<setting>.<name>``), for messages."""
        return self.keys.get(name, f"{self.setting}.{name}")

    def file_name(self, stem: str) -> str:
        """The file name (without extension) that holds ``stem`` (or ``mixture``)."""
        return self.files.get(stem, stem)

    def describe_file(self, stem: str) -> str:
        """How ``stem``'s file name was chosen, for error messages."""
        if stem in self.files:
            return f"{self.setting}.files maps {stem} to '{self.files[stem]}'"
        return f"stems: {', '.join(self.stems)}"

    @property
    def root_is_set(self) -> bool:
        return not _is_unset(self.root)


@dataclass(frozen=True)
class DataSpec:
    """A whole data config: its datasets (one, or the entries of ``datasets``) and the sampling."""

    name: str
    datasets: tuple[DatasetSpec, ...]
    sampling: str
    combined: bool


def data_spec(cfg: Any) -> DataSpec:
    """Read and check a data config (DictConfig or mapping)."""
    sampling = picked(DataLoadingConfig, cfg, "data.").sampling
    entries = _get(cfg, "datasets")
    if entries is None:
        fmt = str(_get(cfg, "format", ""))
        spec = dataset_spec(cfg, str(_get(cfg, "name", fmt)), "data")
        check_weights((spec,))
        return DataSpec(spec.name, (spec,), sampling, combined=False)
    if not isinstance(entries, Mapping) and not hasattr(entries, "items"):
        raise ConfigError("data.datasets must map dataset names to their settings "
                          "(e.g. {musdb: {format: musdb, root: ...}, ccmixter: {...}})")
    if not entries:
        raise ConfigError("data.datasets is empty; name at least one dataset")
    inherited = {key: _get(cfg, key) for key in INHERITED}
    specs = []
    for name, entry in entries.items():
        setting = f"data.datasets.{name}"
        if not isinstance(entry, Mapping) and not hasattr(entry, "keys"):
            raise ConfigError(f"{setting} must be a mapping of settings (format, root, ...)")
        unknown = sorted(set(entry.keys()) - _ENTRY_KEYS)
        if unknown:
            raise ConfigError(f"{setting}: unknown setting(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(_ENTRY_KEYS))})")
        # The entry's own values win; where it leaves an inherited setting null, the top level's.
        merged = {k: v for k, v in inherited.items() if v is not None}
        own = {k: v for k, v in entry.items() if not (v is None and k in INHERITED)}
        merged.update(own)
        keys = {k: f"data.{k}" for k in merged if k not in own}
        keys.update(_top_level_keys(entry))
        specs.append(dataset_spec(merged, str(name), setting, keys))
    check_weights(specs)
    return DataSpec(str(_get(cfg, "name", "combined")), tuple(specs), sampling, combined=True)


def _top_level_keys(entry: Any) -> dict[str, str]:
    """The entry's keys whose value a preset takes from the top level (``${...root}``)."""
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(entry, DictConfig):
        return {}
    raw = OmegaConf.to_container(entry, resolve=False)
    return {str(k): f"data.{m.group(1)}" for k, v in raw.items()
            if isinstance(v, str) and (m := _FROM_TOP_LEVEL.fullmatch(v))}


def check_weights(specs: Sequence[DatasetSpec]) -> None:
    """Some training example must be drawable: not every training dataset at weight 0
    (:func:`data_spec`; again by :func:`~waveunet.data.load_split` for the datasets present)."""
    training = [d for d in specs if "train" in d.splits]
    if training and all(d.weight == 0 for d in training):
        names = ", ".join(f"{d.key('weight')}=0" for d in training)
        raise ConfigError(f"every training dataset has weight 0 ({names}): no training example "
                          "could be drawn; give one a weight > 0")


def dataset_spec(cfg: Any, name: str, setting: str,
                 keys: Mapping[str, str] | None = None) -> DatasetSpec:
    """Read one dataset's settings; ``setting`` ("data" or "data.datasets.<name>") names them,
    ``keys`` the ones given elsewhere (:attr:`DatasetSpec.keys`)."""
    keys = dict(keys or {})

    def named(k: str) -> str:
        return keys.get(k, f"{setting}.{k}")

    fmt = str(_get(cfg, "format", ""))
    if fmt not in FORMATS:  # settings.check's wording for a choice
        raise ConfigError(f"{named('format')}: unknown {fmt!r} (choose from {', '.join(FORMATS)})")
    files = _files(cfg)
    subsets = {**DEFAULT_SUBSETS, **{str(k): v for k, v in (_get(cfg, "subsets") or {}).items()}}
    for key, given in (("files", files != {}), ("subsets", subsets != DEFAULT_SUBSETS)):
        if given and fmt != "folder":
            raise ConfigError(f"{setting}.{key} applies to format 'folder' only "
                              f"({setting}.format is '{fmt}')")
    if set(subsets) != set(DEFAULT_SUBSETS):
        raise ConfigError(f"{setting}.subsets names {', '.join(sorted(subsets))}; "
                          "it maps 'train' and 'test' to folders under the root (or null)")
    subsets = {k: None if _is_unset(v) else str(v) for k, v in subsets.items()}
    splits = tuple(_as_list(_get(cfg, "splits", list(SPLITS))))
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ConfigError(f"{named('splits')}={list(splits)} must list some of "
                          f"{', '.join(SPLITS)}")
    numbers = picked(DatasetConfig, cfg, f"{setting}.", keys)
    # A generated dataset's settings, checked before anything is generated
    # (waveunet.data.synth.generate_dataset; the defaults are `waveunet synth`'s).
    synthetic = (dataclasses.asdict(picked(SyntheticConfig, cfg, f"{setting}.", keys))
                 if fmt == "synthetic" else {})
    valid_tracks = numbers.valid_tracks
    return DatasetSpec(
        name=name, format=fmt, setting=setting,
        root=_text(cfg, "root"), cache_dir=_text(cfg, "cache_dir"),
        stems=_stems(cfg, fmt, files, setting), files=files, subsets=subsets, splits=splits,
        weight=numbers.weight,
        required=bool(_get(cfg, "required", True)), hint=str(_get(cfg, "hint", "")).strip(),
        valid_tracks=(valid_tracks if valid_tracks is None or isinstance(valid_tracks, int)
                      else _as_list(valid_tracks)),
        valid_fraction=numbers.valid_fraction, valid_seed=numbers.valid_seed,
        synthetic=synthetic, keys=keys,
    )


def _text(cfg: Any, key: str) -> str | None:
    value = _get(cfg, key)
    return None if _is_unset(value) else str(value)


def _files(cfg: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (_get(cfg, "files") or {}).items()}


def _stems(cfg: Any, fmt: str, files: dict[str, str], setting: str) -> tuple[str, ...]:
    if fmt != "folder":
        return MUSDB_STEMS
    stems = _as_list(_get(cfg, "stems"))
    mapped = [k for k in files if k != "mixture"]
    if not stems:
        stems = mapped
    if not stems:
        raise ConfigError(f"{setting}.stems must list the stem file names of a 'folder' dataset, "
                          f"e.g. [vocals, accompaniment] (or {setting}.files map them)")
    if "mixture" in stems:
        raise ConfigError(f"{setting}.stems lists 'mixture'; the mixture file is found "
                          "separately, list only the stems")
    extra = [k for k in mapped if k not in stems]
    if extra:
        raise ConfigError(f"{setting}.files maps {', '.join(extra)}, which {setting}.stems "
                          f"({', '.join(stems)}) does not list")
    return tuple(stems)


def missing_sources(sources: Sequence[str], stems: Sequence[str]) -> list[str]:
    """The requested sources a dataset with these stems cannot provide."""
    return [s for s in sources if _stems_for(s, stems) is None]


def _stems_for(source: str, stems: Sequence[str]) -> list[str] | None:
    if source in stems:
        return [source]
    if source == "accompaniment" and "vocals" in stems and len(stems) > 1:
        return [s for s in stems if s != "vocals"]
    return None


def source_plan(sources: Sequence[str], stems: Sequence[str], where: str) -> list[list[str]]:
    """For each requested source, the dataset stems that sum to it."""
    plan = []
    for source in sources:
        group = _stems_for(source, stems)
        if group is None:
            raise ConfigError(
                f"{where}: the model's source '{source}' is not a stem of this dataset "
                f"(stems: {', '.join(stems)}; 'accompaniment' is derived as the sum of "
                "non-vocal stems)"
            )
        plan.append(group)
    return plan


def dataset_stems(cfg: Any, fmt: str | None = None) -> list[str]:
    """The stem names of a data config (of its first dataset with a test split, if combined).

    ``fmt`` (default: ``data.format``) is the format of a single-dataset config.
    """
    if _get(cfg, "datasets") is None:
        fmt = str(_get(cfg, "format", "")) if fmt is None else fmt
        return list(_stems(cfg, fmt, _files(cfg), "data"))
    spec = data_spec(cfg)
    chosen = next((d for d in spec.datasets if "test" in d.splits), spec.datasets[0])
    return list(chosen.stems)
