"""``waveunet evaluate [hydra overrides]``: score a checkpoint, or estimates on disk, on a split.

Examples::

    waveunet evaluate checkpoint=runs/m5_highsr-tanh_difference/<stamp>/best.pt
    waveunet evaluate checkpoint=runs/.../best.pt data=musdb_hq data.root=/data/musdb18hq \\
        metrics=bss
    waveunet evaluate estimates=separated data=folder data.root=/data/songs \\
        data.stems=[vocals,accompaniment]

Settings: :class:`waveunet.settings.EvaluateConfig`, checked once; how to score (split,
metrics, rate, device, ...) is ``configs/eval/default.yaml``, the same block ``waveunet compare``
scores its runs with.

Data flow: the split is loaded at the *scoring* rate and channels (``sample_rate_hz``,
``channels``; by default the dataset's native 44.1 kHz stereo, as the original evaluated) ->
estimates per track, either separated by the checkpoint (:meth:`Separator.separate`, the
any-rate call: the mixture is resampled to the model's rate, tiled into exact output chunks,
the stems are resampled back, and the bound statistics come from the model-rate output) or
read from ``DIR/<track>/<source>.wav`` -> :mod:`waveunet.metrics`
(framewise SDR in torch, clipping statistics, museval BSSEval in worker processes for
``metrics=bss``) -> :func:`waveunet.reporting.evaluation.write_report`.

All sources of a task are scored together (museval's SDR/ISR/SIR/SAR depend on which sources
are evaluated together): the voice task scores vocals against (vocals, accompaniment).

:func:`evaluate` is the importable entry point (``evaluate(cfg) -> summary dict``); the
summary is what ``summary.json`` holds, with ``meta.out_dir`` saying where it was written.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from . import data as data_lib
from .audio import read_audio, resample
from .checkpoint import load_checkpoint, load_model
from .config import compose, config_text
from .errors import CheckpointError, ConfigError, DataError
from .inference import GIB, Separator, resolve_device
from .metrics import (
    BssJob,
    clipping_stats,
    difference_error_share,
    evaluate_tracks,
    framewise_sdr,
    silent_sources,
)
from .reporting.evaluation import (
    TrackResult,
    WaveformSpec,
    prepare_out_dir,
    terminal_summary,
    write_report,
)
from .settings import EvaluateConfig, typed

MUSEVAL_DIR = "museval"  # per-track museval JSON (metrics=bss) inside out_dir

HELP = f"""usage: waveunet evaluate [hydra overrides]

Score a checkpoint (separating every track of a dataset split) or estimates already on
disk, and write summary.json, report.md, SDR box plots and a waveform figure.

  waveunet evaluate checkpoint=runs/<name>/<stamp>/best.pt data=musdb_hq data.root=/data/musdb18hq
  waveunet evaluate checkpoint=runs/<name>/<stamp> metrics=bss workers=4
  waveunet evaluate estimates=separated data=folder data.root=/data/songs \\
      data.stems=[vocals,accompaniment]

Settings (configs/evaluate.yaml and configs/eval/default.yaml; data presets: configs/data/):
{config_text("evaluate.yaml")}
{config_text("eval/default.yaml")}"""


# --------------------------------------------------------------------------------------------
# Where estimates come from
# --------------------------------------------------------------------------------------------


class ModelEstimates:
    """Stems of a checkpoint: whole tracks separated by exact tiling, at the track's rate."""

    kind = "checkpoint"

    def __init__(self, s: EvaluateConfig):
        assert s.checkpoint is not None
        try:
            payload = load_checkpoint(Path(s.checkpoint).expanduser())
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint: {exc}") from exc
        self.path = Path(payload["path"])
        budget = None if s.memory_gib is None else int(s.memory_gib * GIB)
        self.separator = Separator(load_model(self.path, "cpu"), device=s.device,
                                   batch_size=s.batch_size, memory_budget_bytes=budget)
        model_sources = list(self.separator.sources)
        unknown = [x for x in (s.sources or []) if x not in model_sources]
        if unknown:
            raise ConfigError(
                f"sources: {', '.join(unknown)} not among the model's sources "
                f"({', '.join(model_sources)})"
            )
        self.sources = s.sources or model_sources
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

    def __call__(self, track: data_lib.Track) -> tuple[torch.Tensor, torch.Tensor | None,
                                              list[dict[str, Any]]]:
        """(stems, unclipped) at the track's rate and channels, and the bound statistics of the
        model-rate output (:meth:`Separator.separate`: resampling back rings past the bounds)."""
        # a copy: the decoded cache is a read-only memory map
        result = self.separator.separate(np.array(track.mixture, dtype=np.float32),
                                         int(track.sample_rate_hz),
                                         desc=track.name, bound_statistics=True)
        bounds = [result.bound_statistics[i] for i in self._index]
        return result.stems[self._index], result.unclipped[self._index], bounds

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
        }


def _audio_format(path: Path) -> tuple[int, int]:
    """(sample rate, channels) of an audio file; from its header where soundfile reads it."""
    import soundfile

    try:
        info = soundfile.info(str(path))
        return int(info.samplerate), int(info.channels)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        audio, rate = read_audio(path)  # formats soundfile cannot read (e.g. via ffmpeg)
        return rate, int(audio.shape[0])


class DiskEstimates:
    """Estimates written by any system as ``DIR/<track>/<source>.<wav|flac|...>``."""

    kind = "estimates"
    activation = "unknown"
    bounds = (-1.0, 1.0)
    difference_index = None

    def __init__(self, s: EvaluateConfig, data_cfg: Any):
        assert s.estimates is not None
        self.root = Path(s.estimates).expanduser()
        if not self.root.is_dir():
            raise DataError(f"estimates: no such directory {self.root}")
        if s.sources is not None:
            fmt = str(data_cfg.get("format") or "")
            data_lib.source_plan(
                s.sources, data_lib.dataset_stems(data_cfg, fmt), f"sources: data.format={fmt}"
            )
        self.sources = s.sources or self._default_sources(data_cfg)
        self.resampled: dict[str, int] = {}
        self.length_mismatches: list[dict[str, Any]] = []
        self.default_rate_hz: int | None = None
        self.default_channels: int | None = None
        if s.sample_rate_hz is None or s.channels is None:
            self.default_rate_hz, self.default_channels = _audio_format(self._first_file())

    def _default_sources(self, data_cfg: Any) -> list[str]:
        """The sources with files in DIR/*/ that the dataset provides; all its stems if all are
        there."""
        fmt = str(data_cfg.get("format") or "")
        stems = data_lib.dataset_stems(data_cfg, fmt)
        candidates = list(stems)
        if "vocals" in stems and len(stems) > 1 and "accompaniment" not in stems:
            candidates.append("accompaniment")
        found = {
            c for folder in self.root.iterdir() if folder.is_dir()
            for c in candidates if data_lib.find_audio(folder, c) is not None
        }
        if set(stems) <= found:
            return list(stems)  # e.g. a 4-stem system that also wrote accompaniment.wav
        chosen = [c for c in candidates if c in found]
        if not chosen:
            raise DataError(
                f"estimates: no estimate files in {self.root}/<track>/ (looked for "
                f"{', '.join(c + '.wav' for c in candidates)}; set sources=[...] to choose)"
            )
        return chosen

    def _first_file(self) -> Path:
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for source in self.sources:
                path = data_lib.find_audio(folder, source)
                if path is not None:
                    return path
        raise DataError(
            f"estimates: no file for any of {', '.join(self.sources)} in {self.root}/<track>/"
        )

    def _file(self, track: str, source: str) -> Path:
        folder = self.root / track
        if not folder.is_dir():
            raise DataError(
                f"estimates: no folder for track '{track}' ({folder}); expected "
                "DIR/<track>/<source>.wav as `waveunet separate` writes"
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
            if audio.shape[0] != channels:
                raise DataError(
                    f"estimates: {path} has {audio.shape[0]} channel(s), the references "
                    f"have {channels} (set channels=... to score at another count)"
                )
            if rate != track.sample_rate_hz:
                audio = np.asarray(resample(audio, rate, track.sample_rate_hz))
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
                warnings.warn(f"estimates: {path} has {audio.shape[1]} samples, the reference "
                              f"{length}; it is zero-padded or cut at the end (as museval does)",
                              stacklevel=2)
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


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _default_out_dir(s: EvaluateConfig, source: ModelEstimates | DiskEstimates,
                     data_name: str) -> Path:
    tag = f"{s.split}-{data_name}-{s.metrics}"
    if isinstance(source, ModelEstimates):
        return source.path.parent / f"eval-{source.path.stem}-{tag}"
    return Path("evaluations") / f"{source.root.resolve().name}-{tag}"


def default_bss_workers() -> int:
    """museval worker processes: half the CPU cores, 1 to 4.

    Each museval job already keeps ~2 cores busy (numpy FFTs and solves) and peaks at ~4 GB.
    Measured on 2 cores, 2 x 30 s stereo, 2 sources: 1 worker 27.5 s, 2 workers 34.5 s
    (oversubscribed), in-process 24.9 s; one worker also lets separation overlap museval.
    """
    return max(1, min((os.cpu_count() or 1) // 2, 4))


def evaluate(cfg: DictConfig | dict) -> dict[str, Any]:
    """Separate (or read) and score every track of a split; write the report.

    Args:
        cfg: the composed ``evaluate`` config (``compose("evaluate", overrides)``), with a
            ``data`` group as in ``configs/data/``.

    Returns:
        The summary as written to ``<out_dir>/summary.json``
        (:func:`waveunet.reporting.evaluation.build_summary`):
        ``aggregates`` (per metric and source, pooled frames and median of track medians),
        ``clipping``, ``tracks``, and ``meta`` (with ``out_dir``, the scored rate and timings).
    """
    t_start = time.perf_counter()
    s = typed(EvaluateConfig, cfg)
    data_cfg = s.data
    if data_cfg is None:
        raise ConfigError("data: no dataset configured (data=musdb | musdb_hq | folder | ...)")
    data_name = str(data_cfg.get("name") or data_cfg.get("format") or "data")

    source: ModelEstimates | DiskEstimates = (
        ModelEstimates(s) if s.checkpoint is not None else DiskEstimates(s, data_cfg)
    )
    rate = s.sample_rate_hz or source.default_rate_hz
    channels = s.channels or source.default_channels
    out_dir = (Path(s.out_dir).expanduser() if s.out_dir is not None
               else _default_out_dir(s, source, data_name))
    try:  # the one out_dir guard, before any work; overwrite=true clears stale files
        prepare_out_dir(out_dir, s.overwrite, subdirs=(MUSEVAL_DIR,))
    except FileExistsError as exc:
        raise ConfigError(f"out_dir: {exc}") from exc

    tracks = data_lib.load_split(
        data_cfg, s.split, sample_rate_hz=rate, channels=channels, sources=source.sources
    )
    if s.max_tracks is not None:
        tracks = tracks[: s.max_tracks]
    source.check(tracks)
    names = [t.name for t in tracks]
    waveform_name = s.waveform_track or names[0]
    if waveform_name not in names:
        raise ConfigError(f"waveform_track: {waveform_name!r} is not an evaluated track "
                          f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    device = resolve_device(s.device)
    sources = list(source.sources)
    results: dict[str, TrackResult] = {}
    waveform: list[WaveformSpec] = []
    timing = {"estimates_s": 0.0, "sdr_and_clipping_s": 0.0}

    def score(track: data_lib.Track) -> tuple[np.ndarray, np.ndarray]:
        """Estimates + fast metrics of one track; returns (references, estimates) for museval."""
        t0 = time.perf_counter()
        est, raw, bounds = source(track)
        t1 = time.perf_counter()
        refs_np = np.array(track.sources, dtype=np.float32)  # a copy: the cache is a read-only map
        refs = torch.from_numpy(refs_np).to(device)
        est_t = torch.as_tensor(est).to(device)
        raw_t = None if raw is None else torch.as_tensor(raw).to(device)
        sdr = framewise_sdr(refs, est_t, win=rate, hop=rate).cpu()
        clip = clipping_stats(
            est_t,
            refs,
            raw=raw_t,
            bounds=source.bounds,
            activation=source.activation,
            bound_statistics=bounds,
        )
        difference = None
        if source.difference_index is not None:
            difference = difference_error_share(
                est_t, refs, difference_index=source.difference_index
            )
            difference["difference_source"] = sources[difference["difference_source_index"]]
        timing["estimates_s"] += t1 - t0
        timing["sdr_and_clipping_s"] += time.perf_counter() - t1
        results[track.name] = TrackResult(
            track.name, sources, sdr, dict(zip(sources, clip, strict=True)), difference=difference
        )
        est_np = est.numpy() if isinstance(est, torch.Tensor) else est
        if track.name == waveform_name:
            waveform.append(WaveformSpec(
                track.name, refs_np, est_np, rate, raw=None if raw is None else np.asarray(raw),
                passage_seconds=s.waveform_seconds, bounds=source.bounds))
        return refs_np, est_np

    def bss_job(track: data_lib.Track) -> Callable[[], BssJob]:
        def load() -> BssJob:
            refs, est = score(track)
            for what, arr in (("reference", refs), ("estimate", est)):
                silent = silent_sources(arr)
                if silent:
                    raise DataError(
                        f"track '{track.name}': the {what} of "
                        f"{', '.join(sources[i] for i in silent)} "
                        "is silent over the whole track; museval cannot score it (use metrics=sdr, "
                        "or max_tracks / another split)"
                    )
            return BssJob(track.name, sources, refs, est)

        return load

    if s.metrics == "bss":
        if len(sources) < 2:
            raise ConfigError(
                f"metrics=bss needs at least 2 sources scored together, got {sources}"
            )
        t0 = time.perf_counter()
        workers = s.workers if s.workers is not None else default_bss_workers()
        scores = evaluate_tracks([bss_job(t) for t in tracks], rate, json_dir=out_dir / MUSEVAL_DIR,
                                 workers=workers, progress=s.progress)
        timing["bss_wall_s"] = time.perf_counter() - t0
        for name, sc in scores.items():
            results[name].bss = sc
    else:
        from tqdm import tqdm

        for track in tqdm(tracks, desc="evaluate", unit="track", disable=not s.progress):
            score(track)

    audio_seconds = sum(t.samples for t in tracks) / rate
    timing["total_s"] = time.perf_counter() - t_start
    timing["total_s_per_audio_minute"] = timing["total_s"] / (audio_seconds / 60.0)
    meta: dict[str, Any] = {
        "source": source.kind,
        **source.meta(rate),
        "data": data_name,
        "data_format": str(data_cfg.get("format") or ""),
        "data_root": str(data_cfg.get("root") or ""),
        "split": s.split,
        "tracks": len(tracks),
        "audio_seconds": round(audio_seconds, 3),
        "sources": sources,
        "metrics": s.metrics,
        "scored_sample_rate_hz": rate,
        "scored_channels": channels,
        "frames": "1-s windows, 1-s hop (museval defaults) at the scored rate",
        "sdr": "waveunet.metrics.framewise_sdr (equals museval's BSSEval v4 SDR)",
        "clipping_bounds": list(source.bounds),
        "out_dir": str(out_dir.resolve()),
        "timing": {k: round(v, 3) for k, v in timing.items()},
    }
    if s.metrics == "bss":
        meta["museval_json"] = f"{MUSEVAL_DIR}/<track>.json (museval's per-track format)"
    return write_report(out_dir, [results[n] for n in names], meta=meta,
                        waveform=waveform[0] if waveform else None, checked=True)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        return 0
    summary = evaluate(compose("evaluate", argv))
    print(terminal_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
