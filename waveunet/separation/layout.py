"""Where ``waveunet separate`` puts stems, and which files it takes as songs.

The default layout is Demucs': ``OUT/<model name>/<track>/<stem>.<ext>``, so the stems of
two checkpoints never mix and ``waveunet evaluate estimates=OUT/<model name>`` scores them
as they are. ``--filename`` changes the part under ``OUT`` with the fields ``{model}``,
``{track}``, ``{parent}`` (the song's folder), ``{stem}`` (the source) and ``{ext}``.

* **Model name**: the training run's name (``config.name``), followed by ``-<file stem>``
  when the checkpoint is not ``best.pt`` (``m5_highsr-linear_direct``,
  ``m5_highsr-linear_direct-last``); a checkpoint without a run name is named by its file
  stem. ``-n/--name`` overrides it. Which checkpoint wrote each model name is recorded in
  ``OUT/.waveunet-separate.json``; another checkpoint under a name already used is refused
  without ``--force``.
* **Track name**: the song's file name without its extension, except that a song named
  ``mixture.*`` (MUSDB18-HQ's and ``waveunet synth``'s layout) takes its folder's name, and
  MUSDB18's ``<track>.stem.mp4`` drops ``.stem``. Every field is made a safe path component
  (:func:`waveunet.files.safe_path_component`): a track name never leaves ``OUT``.
* **Folders as input**: the audio files under them, recursively and sorted, with extensions
  we read; in a dataset-layout folder (a track folder holding ``mixture.*`` beside its stems)
  only the ``mixture.*`` file; hidden files and anything inside ``OUT`` are skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..data.find import AUDIO_EXTENSIONS
from ..errors import ConfigError, DataError, space_checked
from ..files import (
    atomic_write_text,
    is_temporary,
    remove_stale_temporaries,
    safe_path_component,
)

DEFAULT_TEMPLATE = "{model}/{track}/{stem}.{ext}"
TEMPLATE_FIELDS = ("model", "track", "parent", "stem", "ext")
# Extensions taken from a folder: what the datasets read, and MUSDB18's .stem.mp4.
SONG_EXTENSIONS = (*AUDIO_EXTENSIONS, ".mp4")
# Stem extensions that must not mix in one folder (waveunet evaluate takes the first found).
STEM_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".aiff", ".aif", ".m4a")
MANIFEST = ".waveunet-separate.json"


def model_name(checkpoint: Path, config: dict[str, Any] | None) -> str:
    """The default model name of a checkpoint file (see the module docstring)."""
    run = (config or {}).get("name") if isinstance(config, dict) else None
    stem = checkpoint.stem
    if not run:
        return safe_path_component(stem)
    return safe_path_component(str(run) if stem == "best" else f"{run}-{stem}")


def track_name(song: Path) -> str:
    """The track name of a song file (see the module docstring), a safe path component."""
    name = song.name
    if name.lower().endswith(".stem.mp4"):
        return safe_path_component(name[: -len(".stem.mp4")])
    if song.stem.lower() == "mixture":
        parent = song.absolute().parent.name
        if parent:
            return safe_path_component(parent)
    return safe_path_component(song.stem)


def check_template(template: str) -> None:
    """ConfigError unless ``template`` uses only the known fields, plainly."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"--filename {template!r}: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS or spec or conversion:
            raise ConfigError(f"--filename {template!r}: unknown field {{{field}}} (use "
                              f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)})")
    probe = Path(template)
    if probe.is_absolute() or ".." in probe.parts or not template.strip():
        raise ConfigError(f"--filename {template!r}: must be a relative path inside the "
                          "output folder (no leading /, no ..)")


def render(template: str, *, model: str, song: Path, stem: str, ext: str) -> Path:
    """The relative target path of one stem of ``song``."""
    fields = {"model": model, "track": track_name(song),
              "parent": safe_path_component(song.absolute().parent.name or "_"),
              "stem": safe_path_component(stem), "ext": ext}
    return Path(template.format(**fields))


def expand_songs(arguments: Iterable[str | os.PathLike], out_root: Path) -> list[Path]:
    """Songs from the command line: files as given, folders as the audio files under them."""
    songs: list[Path] = []
    out = out_root.resolve()
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = songs_in_folder(path, out)
            if not found:
                raise DataError(f"{path}: no audio files in this folder (looked for "
                                f"{', '.join(SONG_EXTENSIONS)}, outside {out_root})")
            songs.extend(found)
        else:
            songs.append(path)
    return songs


def songs_in_folder(folder: Path, out: Path) -> list[Path]:
    """The audio files under ``folder`` (module docstring), sorted; nothing inside ``out``."""
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        resolved = here.resolve()
        if resolved == out or out in resolved.parents:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        audio = [here / f for f in filenames
                 if not f.startswith(".") and f.lower().endswith(SONG_EXTENSIONS)]
        mixtures = [p for p in audio if p.stem.lower() == "mixture"]
        files.extend(mixtures or audio)
    return sorted(files, key=lambda p: p.as_posix())


def checkpoint_identity(path: Path) -> str:
    """SHA-256 of a checkpoint file: the same name must mean the same weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"checkpoint": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino}


def check_model_name(out_root: Path, name: str, checkpoint: Path, force: bool) -> dict:
    """ConfigError if another checkpoint already wrote under ``name`` in ``out_root`` (unless
    ``force``); else the manifest that :func:`record_model_name` writes once stems exist.

    The same file, unchanged since (path, size, modification time, inode: a checkpoint saved
    again is a new file renamed into place), is the same checkpoint without reading it;
    otherwise the contents' hashes decide (a copy elsewhere is the same checkpoint).
    """
    try:
        known = json.loads((out_root / MANIFEST).read_text(encoding="utf-8"))
        models = dict(known.get("models", {}))
    except (OSError, ValueError, AttributeError):
        models = {}
    stamp = _file_stamp(checkpoint)
    earlier = models.get(name)
    entry: dict[str, Any] = {**stamp}
    if isinstance(earlier, dict):
        if all(earlier.get(k) == v for k, v in stamp.items()) and "sha256" in earlier:
            entry["sha256"] = earlier["sha256"]
        else:
            entry["sha256"] = checkpoint_identity(checkpoint)
            if earlier.get("sha256") != entry["sha256"] and not force:
                raise ConfigError(
                    f"{out_root / name} holds the stems of another checkpoint "
                    f"({earlier.get('checkpoint')}) under the model name '{name}'; choose "
                    "another name with -n/--name, or --force to replace them")
    models[name] = entry
    return {"models": models}


def record_model_name(out_root: Path, manifest: dict, name: str) -> None:
    """Write the manifest (hashing ``name``'s checkpoint now if :func:`check_model_name` did
    not need to: called from the write stage, off the model's path); no space for it is a
    :class:`~waveunet.errors.DiskFullError` naming it."""
    entry = manifest["models"][name]
    if "sha256" not in entry:
        entry["sha256"] = checkpoint_identity(Path(entry["checkpoint"]))
    path = out_root / MANIFEST
    with space_checked(path):
        atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")


def other_format_stems(target: Path) -> list[Path]:
    """Stems beside ``target`` with its name and another audio extension (an earlier run's)."""
    return [target.with_suffix(ext) for ext in STEM_EXTENSIONS
            if ext != target.suffix.lower() and target.with_suffix(ext).is_file()
            and not is_temporary(target.with_suffix(ext).name)]


def sweep_stale_temporaries(out_root: Path, model: str, template: str) -> list[Path]:
    """Remove the temporaries of dead processes (a SIGKILL'd run's) wherever this ``template``
    puts stems: in ``out_root`` (the manifest's too) and in the folders below it down to the
    template's depth (under ``out_root/<model>`` when the template starts with ``{model}``).

    A folder is removed only when this sweep emptied it (a killed run's track folder that held
    nothing else); a folder that was empty before, or holds anything else, stays. Each stem's own
    folder is swept again when it is written (:class:`waveunet.separation.streaming.StemWriter`).
    Returns the removed temporaries.
    """
    folders = Path(template).parts[:-1]  # the folders of a stem's path, as fields
    removed = remove_stale_temporaries(out_root)
    start, depth = out_root, len(folders)
    if folders and folders[0] == "{model}":
        start, depth = out_root / model, depth - 1
        removed += remove_stale_temporaries(start)
    below: list[Path] = []
    for dirpath, dirnames, _ in os.walk(start):  # symbolic links to folders are not followed
        here = Path(dirpath)
        level = len(here.relative_to(start).parts)
        if level >= depth:
            dirnames[:] = []
        if level:
            below.append(here)
    emptied: set[Path] = set()
    for folder in reversed(below):  # the deepest first: a parent after its children
        swept = remove_stale_temporaries(folder)
        removed += swept
        if swept or folder in emptied:
            try:
                folder.rmdir()  # only if nothing else is there
            except OSError:
                continue
            emptied.add(folder.parent)
    return removed
