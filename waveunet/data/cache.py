"""Decode once: a dataset's tracks as float32 arrays in a cache folder, memory-mapped back.

Each track is decoded (soundfile, or stempeg for ``.stem.mp4``), converted to the
model's channels, resampled to its rate, and stored as one ``(1 + S, C, T)``
array, the mixture then the requested sources, with a JSON manifest of its source
files' size and mtime. Writes are atomic; a track whose files changed is decoded
again; temporaries of killed builds are removed; a full disk is one
:class:`~waveunet.errors.DiskFullError` naming the file. See docs/data.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import convert_channels, read_audio, resample
from ..errors import ConfigError, DataError, space_checked
from ..files import atomic_write_text, remove_stale_temporaries
from .find import Found
from .spec import DEFAULT_SUBSETS, DatasetSpec

CACHE_VERSION = 1
# Stream order inside a MUSDB18 .stem.mp4 (musdb's mus.yaml).
MUSDB_STREAMS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}


@dataclass
class Track:
    """One decoded track. Arrays are read-only views of the cache file (memory-mapped).

    ``dataset``, ``weight`` and ``sampling`` say how :class:`~waveunet.data.TrainingExamples`
    draws from it: per second of audio or per track, times its dataset's weight.
    """

    name: str
    mixture: np.ndarray  # (C, T) float32
    sources: np.ndarray  # (S, C, T) float32, in the requested source order
    source_names: list[str]
    sample_rate_hz: int
    cache_path: Path | None = field(default=None, repr=False)
    dataset: str = ""
    weight: float = 1.0
    sampling: str = "per_second"

    @property
    def samples(self) -> int:
        return int(self.mixture.shape[-1])

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memory map would copy the whole track into every DataLoader
        # worker (spawn) or DDP process; send the path and map it again instead.
        state = dict(self.__dict__)
        if self.cache_path is not None:
            state["mixture"] = state["sources"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.cache_path is not None:
            self.mixture, self.sources = _open_cached(self.cache_path)


# --------------------------------------------------------------------------- the cache folder


def _slug(name: str) -> str:
    short = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:60]}-{short}"


def _file_signature(path: Path, root: Path) -> list[Any]:
    st = path.stat()
    relative = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    return [relative, st.st_size, st.st_mtime_ns]


def _open_cached(path: Path) -> tuple[np.ndarray, np.ndarray]:
    array = np.load(path, mmap_mode="r")
    return array[0], array[1:]


def cache_folder(spec: DatasetSpec, root: Path, sample_rate_hz: int, channels: int,
                 sources: Sequence[str], create: bool = True) -> Path:
    """The cache folder for one (dataset, sample rate, channels, sources) combination
    (``create`` false: only its path)."""
    if spec.cache_dir is None:
        raise ConfigError(f"{spec.key('cache_dir')} is not set")
    key: dict[str, Any] = {"version": CACHE_VERSION, "format": spec.format,
                           "root": str(root.resolve()), "sample_rate_hz": sample_rate_hz,
                           "channels": channels, "sources": list(sources),
                           "stems": list(spec.stems)}
    # Only where set, so the caches of datasets without them keep their folder.
    if spec.files:
        key["files"] = dict(spec.files)
    if spec.subsets != DEFAULT_SUBSETS:
        key["subsets"] = dict(spec.subsets)
    text = json.dumps(key, sort_keys=True)
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    name = f"{spec.name}-{sample_rate_hz}hz-{channels}ch-{digest}"
    folder = Path(spec.cache_dir).expanduser() / name
    if folder.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"{spec.key('cache_dir')} {spec.cache_dir} is inside the dataset "
                          f"{root}; the dataset is never written to")
    if not create:
        return folder
    info = folder / "cache.json"
    with space_checked(info):
        folder.mkdir(parents=True, exist_ok=True)
        if not info.exists():
            atomic_write_text(info, json.dumps(json.loads(text), indent=2) + "\n")
    return folder


def _manifest(found: Found, root: Path, sample_rate_hz: int, channels: int,
              sources: Sequence[str]) -> dict[str, Any]:
    files = sorted(set(found.files.values()))
    return {"version": CACHE_VERSION, "name": found.name, "subset": found.subset,
            "files": [_file_signature(p, root) for p in files],
            "sample_rate_hz": sample_rate_hz, "channels": channels, "sources": list(sources)}


def _cached_is_valid(npy: Path, manifest_path: Path, expected: dict[str, Any]) -> bool:
    if not (npy.is_file() and manifest_path.is_file()):
        return False
    try:
        stored = json.loads(manifest_path.read_text())
        if {k: stored.get(k) for k in expected} != expected:
            return False
        array = np.load(npy, mmap_mode="r")
        return list(array.shape) == stored.get("shape") and array.dtype == np.float32
    except (OSError, ValueError):
        return False


def cached_tracks_match(old_spec: DatasetSpec, old_root: Path, new_spec: DatasetSpec,
                        new_root: Path, found: Sequence[Found], *, sample_rate_hz: int,
                        channels: int, sources: Sequence[str]) -> bool:
    """Whether the ``found`` tracks (all of one subset, at ``new_root``) are exactly the tracks
    that ``old_root``'s cache holds for that subset: the same names, and files of the same
    relative paths, sizes and modification times (what the cache's manifests record). A
    dataset moved with ``mv`` or ``rsync -a`` matches; one copied without its times does not.
    """
    old = cache_folder(old_spec, old_root, sample_rate_hz, channels, sources, create=False)
    subsets = {track.subset for track in found}
    try:
        stored = [json.loads(p.read_text()) for p in old.glob("*.json") if p.name != "cache.json"]
        if sum(m.get("subset") in subsets for m in stored) != len(found):
            return False
        for track in found:
            expected = _manifest(track, new_root, sample_rate_hz, channels, sources)
            manifest = json.loads((old / f"{_slug(f'{track.subset}/{track.name}')}.json")
                                  .read_text())
            if {k: manifest.get(k) for k in expected} != expected:
                return False
    except (OSError, ValueError):
        return False
    return bool(found)


# --------------------------------------------------------------------------- decoding


def _decode_files(found: Found, needed: Sequence[str], sample_rate_hz: int,
                  channels: int) -> dict[str, np.ndarray]:
    """Read the needed stems of a WAV-folder track, check they agree, resample and convert."""
    out: dict[str, np.ndarray] = {}
    reference: tuple[str, int, int] | None = None
    for stem in needed:
        path = found.files[stem]
        try:
            audio, rate = read_audio(path)
        except DataError as exc:
            raise DataError(f"track '{found.name}': {exc}") from exc
        if reference is None:
            reference = (path.name, rate, audio.shape[1])
        elif rate != reference[1]:
            raise DataError(f"track '{found.name}': {path} is at {rate} Hz "
                            f"but {reference[0]} is at {reference[1]} Hz")
        elif audio.shape[1] != reference[2]:
            raise DataError(f"track '{found.name}': {path} has {audio.shape[1]} samples "
                            f"but {reference[0]} has {reference[2]}")
        out[stem] = _to_model_format(audio, rate, sample_rate_hz, channels, found.name, path)
    return out


def _decode_stem_mp4(found: Found, needed: Sequence[str], sample_rate_hz: int,
                     channels: int) -> dict[str, np.ndarray]:
    import stempeg

    path = found.files["mixture"]
    try:
        streams, rate = stempeg.read_stems(str(path), dtype=np.float32, always_3d=True)
    except Exception as exc:
        raise DataError(f"track '{found.name}': cannot decode {path}: {exc}") from exc
    if streams.shape[0] < len(MUSDB_STREAMS):
        raise DataError(f"track '{found.name}': {path} has {streams.shape[0]} streams, "
                        "a MUSDB18 stem file has 5")
    return {
        stem: _to_model_format(np.ascontiguousarray(streams[MUSDB_STREAMS[stem]].T), int(rate),
                               sample_rate_hz, channels, found.name, path)
        for stem in needed
    }


def _to_model_format(audio: np.ndarray, rate: int, sample_rate_hz: int, channels: int, name: str,
                     path: Path) -> np.ndarray:
    try:
        # Before resampling: less to resample when down-mixing.
        audio = convert_channels(audio, channels)
    except DataError as exc:
        raise DataError(f"track '{name}': {path}: {exc}") from exc
    return np.asarray(resample(audio, rate, sample_rate_hz, what=f"track '{name}': {path}"),
                      dtype=np.float32)


def _sum_stems(parts: list[np.ndarray]) -> np.ndarray:
    """The float32 sum, added in place: no (stems, C, T) stack of a long track."""
    total = np.array(parts[0], dtype=np.float32, copy=True)
    for part in parts[1:]:
        np.add(total, part, out=total, casting="unsafe")
    return total


def _build_track(found: Found, fmt: str, plan: list[list[str]], npy: Path, sample_rate_hz: int,
                 channels: int) -> bool:
    """Decode one track into ``npy`` (mixture first, then the sources); True if it is silent."""
    has_mixture = "mixture" in found.files
    if has_mixture:
        needed = sorted({s for group in plan for s in group} | {"mixture"})
    else:
        needed = sorted(found.files)
    if fmt in ("musdb", "preview"):
        stems = _decode_stem_mp4(found, needed, sample_rate_hz, channels)
    else:
        stems = _decode_files(found, needed, sample_rate_hz, channels)
    mixture = stems["mixture"] if has_mixture else _sum_stems([stems[s] for s in stems])
    silent = not np.any(mixture)

    def parts() -> Iterator[np.ndarray]:
        nonlocal silent
        yield mixture
        for group in plan:
            source = stems[group[0]] if len(group) == 1 else _sum_stems([stems[s] for s in group])
            silent = silent and not np.any(source)
            yield source

    _write_array(npy, (1 + len(plan), channels, mixture.shape[-1]), parts())
    return silent


def _write_array(npy: Path, shape: tuple[int, ...], parts: Iterator[np.ndarray]) -> None:
    """Write ``parts`` (float32, each ``shape[1:]``) one after the other as the ``.npy`` array
    ``shape``, atomically (a pid-tagged temporary renamed into place).

    Plain writes, not a memory map (``np.lib.format.open_memmap``): the map's file is sparse,
    and a full disk under a page being written kills the process with SIGBUS, where a write()
    fails with ENOSPC: a :class:`~waveunet.errors.DiskFullError` naming ``npy``. Parts one by
    one: no ``(1 + S, C, T)`` stack of a long track in memory.
    """
    tmp = npy.with_name(f".{npy.name}.pid{os.getpid()}.tmp.npy")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False, "shape": shape}
    try:
        with space_checked(npy):
            with open(tmp, "wb") as f:
                np.lib.format.write_array_header_1_0(f, header)
                for part in parts:
                    if tuple(part.shape) != tuple(shape[1:]):  # the header would lie
                        raise DataError(f"{npy}: a part of shape {tuple(part.shape)}, "
                                        f"expected {tuple(shape[1:])}")
                    f.write(np.ascontiguousarray(part, dtype=np.float32).data)
            os.replace(tmp, npy)
    except OSError as exc:
        raise DataError(f"cannot write the cache file {npy}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def load_tracks(spec: DatasetSpec, root: Path, found: list[Found], plan: list[list[str]], *,
                split: str, sample_rate_hz: int, channels: int, sources: Sequence[str],
                progress: bool = True) -> list[Track]:
    """The found tracks, decoded into the cache where needed and memory-mapped from it
    (``progress``: a bar while decoding)."""
    from tqdm import tqdm

    cache = cache_folder(spec, root, sample_rate_hz, channels, sources)
    remove_stale_temporaries(cache)  # left by decodes that were killed
    todo = []
    for track in found:
        slug = _slug(f"{track.subset}/{track.name}")
        npy, manifest_path = cache / f"{slug}.npy", cache / f"{slug}.json"
        try:
            expected = _manifest(track, root, sample_rate_hz, channels, sources)
        except OSError as exc:
            raise DataError(f"track '{track.name}': cannot stat its files: {exc}") from exc
        if not _cached_is_valid(npy, manifest_path, expected):
            todo.append((track, npy, manifest_path, expected))
    for track, npy, manifest_path, expected in tqdm(todo, desc=f"decoding {spec.name} {split}",
                                                    unit="track", disable=not (todo and progress)):
        # Drop the old manifest first: a crash below must not leave it vouching for a stale array.
        manifest_path.unlink(missing_ok=True)
        silent = _build_track(track, spec.format, plan, npy, sample_rate_hz, channels)
        shape = list(np.load(npy, mmap_mode="r").shape)
        with space_checked(manifest_path):
            atomic_write_text(manifest_path,
                              json.dumps({**expected, "shape": shape, "silent": silent}, indent=1))

    tracks = []
    for track in found:
        npy = cache / f"{_slug(f'{track.subset}/{track.name}')}.npy"
        if json.loads(npy.with_suffix(".json").read_text()).get("silent"):
            files = ", ".join(str(p) for p in track.files.values())
            warnings.warn(f"track '{track.name}' is silent ({files})", stacklevel=3)
        mixture, srcs = _open_cached(npy)
        tracks.append(Track(track.name, mixture, srcs, list(sources), sample_rate_hz,
                            cache_path=npy))
    return tracks
