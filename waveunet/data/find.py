"""Finding a dataset's tracks on disk and choosing its splits, before anything is decoded.

A dataset's songs are listed from its ``train`` and ``test`` folders (``subsets``;
a CCMixter-style corpus keeps its songs in the root itself), each song's files
found by name (``stems`` and the ``files`` mapping), and the ``train``/``valid``
split chosen from the training songs. Generated and preview datasets are created
here on first use.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import audio_format
from ..errors import ConfigError, DataError
from ..files import DIR_MODE
from .spec import MUSDB_FORMATS, DatasetSpec

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".m4a")


@dataclass
class Found:
    """A track as found on disk, before decoding."""

    name: str
    subset: str  # "train" or "test"
    files: dict[str, Path]  # stem name (and "mixture" if present) -> file; a .stem.mp4 holds all


def official_validation_tracks() -> list[str]:
    """MUSDB18's validation track names, read from musdb's own mus.yaml.

    Read as a file so WAV datasets do not need ``import musdb`` (which needs ffmpeg).
    """
    import yaml

    spec = importlib.util.find_spec("musdb")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the musdb package is not installed "
                        "(needed for the official validation split)")
    setup = Path(list(spec.submodule_search_locations)[0]) / "configs" / "mus.yaml"
    return list(yaml.safe_load(setup.read_text())["validation_tracks"])


# --------------------------------------------------------------------------- the root


def dataset_root(spec: DatasetSpec) -> Path:
    """The dataset's folder, generated or downloaded first where its format does that."""
    root = spec.root
    if spec.format == "musdb" and root is None:
        root = os.environ.get("MUSDB_PATH") or None
    if root is None:
        how = spec.hint or f"Set {spec.key('root')}=/path/to/dataset."
        raise ConfigError(f"{spec.key('root')} is not set for the '{spec.name}' dataset. {how}")
    path = Path(root).expanduser()
    if spec.format == "preview":
        _ensure_preview(path)
    elif spec.format == "synthetic":
        _ensure_synthetic(path, spec)
    if not path.is_dir():
        raise DataError(f"dataset root not found: {path} ({spec.key('root')}, the {spec.name} "
                        f"dataset, format {spec.format})")
    return path


def _ensure_preview(root: Path) -> None:
    """Download the 7-second MUSDB18 sample with musdb, into a temporary folder renamed into
    place."""
    if (root / "train").is_dir():
        return
    import musdb

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.download-", dir=root.parent))
    try:
        tmp.chmod(DIR_MODE)  # mkdtemp makes 0700; the dataset should look like any other folder
        musdb.DB(root=str(tmp), download=True, subsets=["train"])
        if not (tmp / "train").is_dir():
            raise DataError(f"the MUSDB18 preview download into {tmp} produced no train/ folder")
        os.replace(tmp, root)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot download the MUSDB18 preview to {root}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ensure_synthetic(root: Path, spec: DatasetSpec) -> None:
    """Generate the configured synthetic dataset the first time it is used.

    An existing one must match the configuration: its ``synth.json`` (written by
    :func:`waveunet.data.synth.generate_dataset`) is compared with the settings, so a
    changed setting is never silently ignored.
    """
    from .synth import MARKER, default_test_tracks, generate_dataset

    given = {**{"tracks": 8, "seconds": 12.0, "seed": 0},
             **{k: v for k, v in spec.synthetic.items() if v is not None}}
    tracks, seconds, seed = int(given["tracks"]), float(given["seconds"]), int(given["seed"])
    test_tracks = given.get("test_tracks")
    if test_tracks is None:
        test_tracks = default_test_tracks(tracks)
    wanted = {"tracks": tracks, "seconds": seconds, "seed": seed, "test_tracks": int(test_tracks)}
    marker = root / MARKER
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
            have = {"tracks": int(info["tracks"]), "seconds": float(info["seconds"]),
                    "seed": int(info["seed"]), "test_tracks": int(info["test_tracks"])}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise DataError(f"cannot read the synthetic dataset's settings from {marker}: "
                            f"{exc}") from exc
        differ = [f"{k}: {have[k]} there, {wanted[k]} configured"
                  for k in wanted if have[k] != wanted[k]]
        if differ:
            raise ConfigError(
                f"the synthetic dataset at {root} was generated with other settings "
                f"({'; '.join(differ)}; see {marker}); set {spec.key('root')} to another folder "
                "or remove this one")
    if (root / "train").is_dir():
        return

    print(f"generating synthetic dataset in {root} ...", flush=True)
    generate_dataset(root, tracks=tracks, seconds=seconds, seed=seed, test_tracks=test_tracks)


# --------------------------------------------------------------------------- listing


def find_audio(folder: Path, stem: str) -> Path | None:
    for ext in AUDIO_EXTENSIONS:
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def list_tracks(spec: DatasetSpec, root: Path, subset: str) -> list[Found]:
    """Every track of the ``train`` or ``test`` subset, with its files (all checked to exist)."""
    if spec.format in ("musdb", "preview"):
        return _list_stem_tracks(root, subset)
    return _list_folder_tracks(spec, root, subset)


def _list_folder_tracks(spec: DatasetSpec, root: Path, subset: str) -> list[Found]:
    folder = spec.subsets[subset]
    if folder is None:
        why = ": all its songs are training songs" if subset == "test" else ""
        raise DataError(f"the {spec.name} dataset at {root} has no {subset} songs "
                        f"({spec.setting}.subsets.{subset} is null{why})")
    subset_dir = root / folder
    if not subset_dir.is_dir():
        raise DataError(f"dataset split folder not found: {subset_dir}")
    # A 'folder' dataset may leave out the mixture (the sum of its stems), unless it maps one.
    mixture_required = spec.format != "folder" or "mixture" in spec.files
    found = []
    songs = (p for p in subset_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for track_dir in sorted(songs):
        files: dict[str, Path] = {}
        for stem in [*spec.stems, "mixture"]:
            name = spec.file_name(stem)
            path = find_audio(track_dir, name)
            if path is not None:
                files[stem] = path
            elif stem != "mixture" or mixture_required:
                raise DataError(
                    f"track '{track_dir.name}': missing stem file {track_dir / (name + '.wav')} "
                    f"(expected one of {', '.join(name + e for e in AUDIO_EXTENSIONS[:2])}; "
                    f"{spec.describe_file(stem)})"
                )
        found.append(Found(track_dir.name, subset, files))
    return found


def _list_stem_tracks(root: Path, subset: str) -> list[Found]:
    subset_dir = root / subset
    if not subset_dir.is_dir():
        raise DataError(f"dataset split folder not found: {subset_dir}")
    import musdb  # listing as musdb does it, so names match the official splits

    db = musdb.DB(root=str(root), subsets=[subset], is_wav=False)
    return [Found(t.name, subset, {"mixture": Path(t.path)}) for t in db.tracks]


def native_rate_hz(found: Found) -> int:
    """The sample rate of a track's files as stored (its first file's header:
    :func:`waveunet.audio.audio_format`, which needs ffprobe for ``.stem.mp4`` only)."""
    path = sorted(found.files.values())[0]
    try:
        return audio_format(path)[0]
    except DataError as exc:
        raise DataError(f"track '{found.name}': cannot read the sample rate: {exc}") from exc


# --------------------------------------------------------------------------- splits


def select_split(found_train: list[Found], split: str, spec: DatasetSpec,
                 root: Path) -> list[Found]:
    """The ``train`` or ``valid`` part of the training songs."""
    valid = validation_names([t.name for t in found_train], spec, root)
    keep_valid = split == "valid"
    return [t for t in found_train if (t.name in valid) == keep_valid]


def validation_names(names: list[str], spec: DatasetSpec, root: Path) -> set[str]:
    """Which training songs are held out for validation (none if the dataset gives no 'valid')."""
    if "valid" not in spec.splits:
        return set()
    chosen = spec.valid_tracks
    if isinstance(chosen, int):
        # The original Wave-U-Net's protocol: a fixed-seed random draw of training songs.
        if chosen > len(names) - 1:
            raise ConfigError(f"{spec.key('valid_tracks')}={chosen} leaves no training songs "
                              f"({len(names)} in {root})")
        rng = np.random.default_rng(spec.valid_seed)
        return {str(n) for n in rng.choice(sorted(names), size=chosen, replace=False)}
    if chosen is not None:
        missing = sorted(set(chosen) - set(names))
        if missing:
            raise ConfigError(f"{spec.key('valid_tracks')} names tracks not among the training "
                              f"songs of {root}: {', '.join(missing)}")
        return set(chosen)
    if spec.format in MUSDB_FORMATS:
        return set(official_validation_tracks())
    fraction = spec.valid_fraction
    count = min(max(round(fraction * len(names)), 1 if fraction > 0 else 0), max(len(names) - 1, 0))
    # The last names in sorted order: stable when tracks are appended with later names.
    return set(sorted(names)[len(names) - count:]) if count else set()


def empty_split_hint(spec: DatasetSpec, root: Path, n_train: int) -> str:
    """Why a validation split came out empty, for its format."""
    if "valid" not in spec.splits:
        return f" ({spec.key('splits')}={list(spec.splits)} gives no validation split)"
    if spec.valid_tracks is not None:
        return f" ({spec.key('valid_tracks')} is empty)"
    if spec.format in MUSDB_FORMATS:
        return (" (MUSDB datasets use the official validation track names; "
                f"set {spec.key('valid_tracks')})")
    return (f" ({spec.key('valid_fraction')}={spec.valid_fraction} gives 0 of {n_train} tracks; "
            f"add tracks or set {spec.key('valid_tracks')})")
