"""Where an evaluation's estimates come from: a checkpoint that separates each track, or files
that any system wrote as ``DIR/<track>/<source>.<ext>``.

Both give :func:`waveunet.evaluation.evaluate.evaluate` the same thing per track: (S, C, T) stems
at the track's rate and channels, in the order of ``sources``. ``waveunet separate`` writes
``OUT/<model name>/<track>/<stem>.<ext>``, so ``estimates=OUT/<model name>`` reads its output as
written; track folders are named as the dataset names its tracks (MUSDB18's spaces, apostrophes
and brackets included).

Sources are scored in one order whatever the estimates' origin (:func:`source_order`), so a
checkpoint's report and the report of its separated files list them alike.

A NaN or infinite estimate sample is an error naming the file (or the model's source) and the
first bad sample: scored as it is, a NaN frame would count as silent and an infinite one as
perfect. ``nonfinite=zero`` scores those samples as 0 instead, and the report lists them
(:attr:`Estimates.replaced`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import data as data_lib
from ..audio import audio_format, read_audio, resample
from ..errors import CheckpointError, ConfigError, DataError
from ..model.checkpoint import load_checkpoint, load_model
from ..reporting.format import plural
from ..separation.inference import GIB, Separator
from ..settings.schema import EvaluateConfig

log = logging.getLogger("waveunet.evaluate")  # the command's name: its log lines say what ran


def source_order(names: Sequence[str]) -> list[str]:
    """The order an evaluation lists its sources in when none is asked for: by name. That is
    MUSDB18's (bass, drums, other, vocals) and the presets' (accompaniment, vocals)."""
    return sorted(names)


def checkpoint_data(checkpoint: str | Path) -> dict[str, Any]:
    """The data config a checkpoint was trained with (``waveunet train`` stores it resolved)."""
    try:
        payload = load_checkpoint(Path(checkpoint).expanduser())
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint: {exc}") from exc
    data = (payload.get("config") or {}).get("data")
    if not data:
        raise ConfigError(
            f"data: the checkpoint {payload['path']} records no training dataset (it was not "
            "written by `waveunet train`); choose one with data=<preset> "
            f"({', '.join(_data_presets())}) and data.root=DIR")
    return dict(data)


def _data_presets() -> list[str]:
    from ..settings.compose import group_options

    return group_options("data")


class Estimates:
    """What both origins share: the non-finite rule and the list of replaced samples."""

    kind = ""
    sources: list[str]

    def __init__(self, nonfinite: str):
        self.nonfinite = nonfinite
        self.replaced: list[dict[str, Any]] = []

    def finite(self, audio: np.ndarray, track: str, source: str, where: str,
               file: Path | None = None) -> np.ndarray:
        """``audio`` (C, T) if every sample is finite; else an error naming ``where`` and the
        first bad sample, or (``nonfinite=zero``) a copy with those samples set to 0."""
        bad = ~np.isfinite(audio)
        if not bad.any():
            return audio
        sample = int(bad.any(axis=0).argmax())
        channel = int(bad[:, sample].argmax())
        count = int(bad.sum())
        if self.nonfinite != "zero":
            raise DataError(
                f"{where} has {plural(count, 'non-finite sample')} (NaN or inf); the first is "
                f"{audio[channel, sample]} at sample {sample}, channel {channel}. Scored as it "
                "is, it would read as silent or perfect: fix the estimate, or set "
                "nonfinite=zero to score such samples as 0 (flagged in the report)")
        self.replaced.append({"track": track, "source": source,
                              "file": None if file is None else str(file), "count": count,
                              "first_sample": sample, "first_channel": channel})
        log.warning("%s: %s scored as 0 (nonfinite=zero)", where,
                    plural(count, "non-finite sample"))
        return np.where(bad, np.float32(0), audio)


class ModelEstimates(Estimates):
    """Stems of a checkpoint: whole tracks separated by exact tiling, at the track's rate."""

    kind = "checkpoint"

    def __init__(self, s: EvaluateConfig):
        super().__init__(s.nonfinite)
        assert s.checkpoint is not None
        try:
            payload = load_checkpoint(Path(s.checkpoint).expanduser())
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint: {exc}") from exc
        self.path = Path(payload["path"])
        budget = None if s.memory_gib is None else int(s.memory_gib * GIB)
        self.separator = Separator(load_model(self.path, "cpu"), device=s.device,
                                   batch_size=s.batch_size, memory_budget_bytes=budget,
                                   precision=s.precision)
        model_sources = list(self.separator.sources)
        unknown = [x for x in (s.sources or []) if x not in model_sources]
        if unknown:
            raise ConfigError(
                f"sources: {', '.join(unknown)} not among the model's sources "
                f"({', '.join(model_sources)})"
            )
        self.sources = list(s.sources or source_order(model_sources))
        self._index = [model_sources.index(x) for x in self.sources]
        mode = self.separator.model.output_mode
        self.output_name = mode.name
        self.activation = mode.activation
        self.bounds = mode.bounds.measured()
        # The difference source (the model's last) is attributable only when all sources are scored.
        full = sorted(self.sources) == sorted(model_sources)
        self.difference_index = (
            self.sources.index(model_sources[-1]) if mode.type == "difference" and full else None
        )
        self.default_rate_hz = self.separator.sample_rate_hz
        self.default_channels = self.separator.channels

    def check(self, tracks: Sequence[data_lib.Track]) -> None:
        """Nothing to check up front: the model separates any mixture."""

    def __call__(self, track: data_lib.Track) -> tuple[np.ndarray, np.ndarray | None,
                                              list[dict[str, Any]]]:
        """(stems, unclipped) at the track's rate and channels, and the bound statistics of the
        model-rate output (:meth:`Separator.separate`: resampling back rings past the bounds)."""
        # a copy: the decoded cache is a read-only memory map
        result = self.separator.separate(np.array(track.mixture, dtype=np.float32),
                                         int(track.sample_rate_hz),
                                         desc=track.name, bound_statistics=True)
        stems = result.stems[self._index].numpy()
        raw = result.unclipped[self._index].numpy()
        for i, source in enumerate(self.sources):
            stem = stems[i]
            fixed = self.finite(stem, track.name, source,
                                f"track '{track.name}': the model's {source} estimate")
            if fixed is not stem:
                stems[i], raw[i] = fixed, np.where(np.isfinite(raw[i]), raw[i], 0)
        bounds = [result.bound_statistics[i] for i in self._index]
        return stems, raw, bounds

    def meta(self, rate_hz: int) -> dict[str, Any]:
        model_rate = self.separator.sample_rate_hz
        cfg = self.separator.model.config
        if model_rate == rate_hz:
            note = f"{rate_hz} Hz, the model's own rate"
        else:
            note = (f"{rate_hz} Hz: the mixture was resampled to the model's {model_rate} Hz and "
                    f"its stems back to {rate_hz} Hz before scoring")
        return {
            "checkpoint": str(self.path.resolve()),
            "model": cfg.name,
            "output_mode": self.output_name,
            "model_sample_rate_hz": model_rate,
            "scored_rate": note,
            "chunk_output_samples": self.separator.chunk_output_samples,
            "batch_size": self.separator.batch_size,
            "device": str(self.separator.device),
            "precision": self.separator.precision,
        }


class DiskEstimates(Estimates):
    """Estimates written by any system as ``DIR/<track>/<source>.<wav|flac|mp3|...>``."""

    kind = "estimates"
    activation = "unknown"
    bounds = (-1.0, 1.0)
    difference_index = None

    def __init__(self, s: EvaluateConfig, data_cfg: Any):
        super().__init__(s.nonfinite)
        assert s.estimates is not None
        self.root = Path(s.estimates).expanduser()
        if not self.root.is_dir():
            raise DataError(f"estimates: no such directory {self.root}")
        # the dataset's stems (a combined config's: those of its test dataset)
        stems = data_lib.dataset_stems(data_cfg)
        if s.sources is not None:
            data_lib.source_plan(s.sources, stems,
                                 f"sources: data={data_lib.data_spec(data_cfg).name}")
        self.sources = list(s.sources or self._default_sources(stems))
        self.resampled: dict[str, int] = {}
        self.length_mismatches: list[dict[str, Any]] = []
        self.default_rate_hz: int | None = None
        self.default_channels: int | None = None
        if s.sample_rate_hz is None or s.channels is None:
            self.default_rate_hz, self.default_channels = audio_format(self._first_file())

    def _default_sources(self, stems: Sequence[str]) -> list[str]:
        """The sources with files in DIR/*/ that the dataset (its ``stems``) provides; all its
        stems if all are there."""
        candidates = list(stems)
        if "vocals" in stems and len(stems) > 1 and "accompaniment" not in stems:
            candidates.append("accompaniment")
        found = {
            c for folder in self.root.iterdir() if folder.is_dir()
            for c in candidates if data_lib.find_audio(folder, c) is not None
        }
        if set(stems) <= found:
            return source_order(stems)  # e.g. a 4-stem system that also wrote accompaniment.wav
        chosen = [c for c in candidates if c in found]
        if not chosen:
            raise DataError(
                f"estimates: no estimate files in {self.root}/<track>/ (looked for "
                f"{', '.join(c + '.wav' for c in candidates)}; set sources=[...] to choose)"
                + self._layout_hint(candidates)
            )
        return source_order(chosen)

    def _layout_hint(self, sources: Sequence[str]) -> str:
        """A hint when DIR is `waveunet separate`'s -o folder rather than its model folder."""
        models = [p for p in sorted(self.root.iterdir()) if p.is_dir()
                  and any(q.is_dir() and any(data_lib.find_audio(q, s) for s in sources)
                          for q in p.iterdir())]
        if not models:
            return ""
        return (f"; `waveunet separate` writes OUT/<model name>/<track>/: did you mean "
                f"estimates={models[0]}?")

    def _first_file(self) -> Path:
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for source in self.sources:
                path = data_lib.find_audio(folder, source)
                if path is not None:
                    return path
        raise DataError(
            f"estimates: no file for any of {', '.join(self.sources)} in {self.root}/<track>/"
            + self._layout_hint(self.sources)
        )

    def _file(self, track: str, source: str) -> Path:
        folder = self.root / track
        if not folder.is_dir():
            raise DataError(
                f"estimates: no folder for track '{track}' ({folder}); expected "
                "DIR/<track>/<source>.wav as `waveunet separate` writes"
                + self._layout_hint(self.sources)
            )
        path = data_lib.find_audio(folder, source)
        if path is None:
            raise DataError(f"estimates: missing estimate file {folder / (source + '.wav')} (track "
                            f"'{track}', source '{source}')")
        return path

    def check(self, tracks: Sequence[data_lib.Track]) -> None:
        """Every track's every source file must be there, before any work is done."""
        for track in tracks:
            for source in self.sources:
                self._file(track.name, source)

    def __call__(self, track: data_lib.Track) -> tuple[np.ndarray, None, None]:
        channels, length = track.mixture.shape
        out = np.zeros((len(self.sources), channels, length), dtype=np.float32)
        for i, source in enumerate(self.sources):
            path = self._file(track.name, source)
            audio, rate = read_audio(path)
            # before resampling, which would spread a bad sample over its neighbours
            audio = self.finite(audio, track.name, source, f"estimates: {path}", file=path)
            if audio.shape[0] != channels:
                raise DataError(
                    f"estimates: {path} has {audio.shape[0]} channel(s), the references "
                    f"have {channels} (set channels=... to score at another count)"
                )
            if rate != track.sample_rate_hz:
                audio = np.asarray(resample(audio, rate, track.sample_rate_hz,
                                               what=f"estimates: {path}"))
                self.resampled[str(path)] = rate
            if audio.shape[1] != length:
                # museval's rule (metrics follow it): cut or zero-pad at the end.
                self.length_mismatches.append(
                    {
                        "file": str(path),
                        "samples": int(audio.shape[1]),
                        "reference_samples": int(length),
                    }
                )
                log.warning("estimates: %s has %d samples, the reference %d; it is zero-padded "
                            "or cut at the end (as museval does)", path, audio.shape[1], length)
            n = min(length, audio.shape[1])
            out[i, :, :n] = audio[:, :n]
        return out, None, None

    def meta(self, rate_hz: int) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "estimates": str(self.root.resolve()),
            "scored_rate": f"{rate_hz} Hz",
        }
        if self.resampled:
            rates = sorted(set(self.resampled.values()))
            meta["scored_rate"] += (
                f" (estimate files at {', '.join(map(str, rates))} Hz resampled to it)"
            )
        if self.length_mismatches:
            meta["length_mismatches"] = self.length_mismatches
        return meta
