"""``waveunet evaluate [hydra overrides]``: score a checkpoint, or estimates on disk, on a split.

Examples::

    waveunet evaluate checkpoint=runs/m5_highsr-tanh_difference/<stamp>/best.pt  # its own data
    waveunet evaluate checkpoint=runs/.../best.pt data=musdb_hq data.root=/data/musdb18hq \\
        metrics=bss
    waveunet evaluate estimates=separated data=folder data.root=/data/songs \\
        data.stems=[vocals,accompaniment]

Settings: :class:`waveunet.settings.schema.EvaluateConfig`, checked once; how to score (split,
metrics, rate, device, ...) is ``configs/eval/default.yaml``, the same block ``waveunet compare``
scores its runs with.

Which dataset: ``data=<preset>`` (with ``data.*`` settings) chooses one; without it, a checkpoint
is scored on the dataset it was trained on (the resolved data config ``waveunet train`` stores in
it, with any ``data.*`` settings given on top), so the command printed at the end of training
works as printed.

Data flow: the split is loaded at the *scoring* rate and channels (``sample_rate_hz``,
``channels``: 44.1 kHz stereo whatever the dataset, as the original evaluated; null: the
model's, or for estimates on disk the estimate files') ->
estimates per track, either separated by the checkpoint (:meth:`Separator.separate`, the
any-rate call: the mixture is resampled to the model's rate, tiled into exact output chunks,
the stems are resampled back, and the bound statistics come from the model-rate output) or
read from ``DIR/<track>/<source>.wav`` -> :mod:`waveunet.metrics`
(framewise SDR in torch, clipping statistics, museval BSSEval in worker processes for
``metrics=bss``) -> :func:`waveunet.reporting.evaluation.write_report`.

``metrics=bss`` writes museval's per-track JSON where museval's own loaders find it:
``<out_dir>/test/<track>.json`` (``train/`` for the train and valid splits, as museval files
MUSDB18's validation tracks), so ``museval.MethodStore().add_eval_dir(out_dir)`` and
``museval.EvalStore().add_eval_dir(out_dir)`` load it; every reference is checked for silence
(which museval cannot score) before anything is scored.

One evaluation at a time writes into an ``out_dir``: it holds the folder's lock
(:func:`waveunet.folders.held_folder`) from the check that the folder holds no report to its
last file, and a second one is refused naming the holder's PID.

All sources of a task are scored together (museval's SDR/ISR/SIR/SAR depend on which sources
are evaluated together): the voice task scores vocals against (vocals, accompaniment).

:func:`evaluate` is the importable entry point (``evaluate(cfg) -> summary dict``); the
summary is what ``summary.json`` holds, with ``meta.out_dir`` saying where it was written.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .. import data as data_lib
from ..devices import resolve_device, thread_scope
from ..errors import ConfigError, DataError, DiskFullError
from ..folders import held_folder
from ..metrics import (
    BssJob,
    clipping_stats,
    difference_error_share,
    evaluate_tracks,
    framewise_sdr,
    silent_sources,
)
from ..reporting.evaluation import (
    TrackResult,
    WaveformSpec,
    prepare_out_dir,
    terminal_summary,
    write_report,
)
from ..settings.compose import compose, override_key
from ..settings.flags import run_command
from ..settings.schema import EvaluateConfig, typed
from .estimates import DiskEstimates, ModelEstimates, checkpoint_data

log = logging.getLogger("waveunet.evaluate")  # the command's name: its log lines say what ran

# museval's per-track JSON goes to <out_dir>/<subset>/<track>.json, the subset named as museval
# names MUSDB18's (its validation tracks are training tracks), where add_eval_dir finds it.
MUSEVAL_SUBSETS = {"test": "test", "train": "train", "valid": "train"}
MUSEVAL_FOLDERS = sorted(set(MUSEVAL_SUBSETS.values()))

HELP = """usage: waveunet evaluate [key=value overrides] [--help | --cfg job]

Score a checkpoint (separating every track of a dataset split) or estimates already on
disk, and write summary.json, report.md, an SDR box plot and the waveform and spectrogram
figures of one passage.

  waveunet evaluate checkpoint=runs/<name>/<stamp>/best.pt        # on the data it trained on
  waveunet evaluate checkpoint=runs/<name>/<stamp>/best.pt data=musdb_hq data.root=/data/musdb18hq
  waveunet evaluate checkpoint=runs/<name>/<stamp> metrics=bss workers=4 threads=2
  waveunet evaluate estimates=separated/<model name> data=musdb_hq data.root=/data/musdb18hq

Without data=<preset>, a checkpoint is scored on the dataset it was trained on (data.*
settings apply on top). Settings and their meaning: configs/evaluate.yaml and
configs/eval/default.yaml; data presets: configs/data/."""


def compose_evaluate(overrides: Sequence[str]) -> DictConfig:
    """evaluate's config from command-line overrides.

    With ``data=<preset>``, Hydra composes everything. Without it, a checkpoint's own training
    dataset is the data config, and the ``data.*`` overrides are applied to it; estimates on
    disk need a preset.
    """
    keys = [override_key(o) for o in overrides]
    if "data" in keys:
        return compose("evaluate", overrides)
    data_overrides = [o for o, k in zip(overrides, keys, strict=True) if k.startswith("data.")]
    cfg = compose("evaluate", [o for o in overrides if o not in data_overrides])
    if cfg.get("checkpoint") is None:
        if data_overrides:
            raise ConfigError(f"{data_overrides[0]}: choose a dataset preset first, e.g. "
                              "data=musdb_hq data.root=DIR (the data.* settings go on top of it)")
        return cfg
    data = OmegaConf.create(_said(checkpoint_data(cfg.checkpoint)))
    _apply(data, data_overrides)
    cfg.data = data
    return cfg


def _said(data: Any) -> Any:
    """Tell the user which dataset a checkpoint is scored on when they did not choose one."""
    log.warning("no data=<preset> given: scoring on the checkpoint's training dataset (%s at %s)",
                data.get("name") or data.get("format"), data.get("root"))
    return data


def _apply(data: DictConfig, overrides: Sequence[str]) -> None:
    """Hydra's ``data.key=value`` overrides applied to a data config (Hydra's grammar)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from None
    for o in parsed:
        key = o.key_or_group.removeprefix("data.")
        if o.is_delete():
            raise ConfigError(f"~{o.key_or_group}: removing a key of the checkpoint's dataset "
                              "is not supported; choose a preset with data=...")
        if not o.is_add() and OmegaConf.select(data, key, default="<missing>") == "<missing>":
            raise ConfigError(f"unknown setting '{o.key_or_group}' (the checkpoint's dataset has "
                              f"no such key; +{o.key_or_group}=... adds one)")
        OmegaConf.update(data, key, o.value(), merge=False)


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


@contextmanager
def rerun_said_on_full_disk(out_dir: Path, overwrite: bool,
                            subdirs: Sequence[str] = ()) -> Iterator[None]:
    """A write that found no space: its one line also says how to go on, with overwrite=true
    where the files written before it (a part of the report, museval JSON) would make the
    out_dir guard refuse a plain rerun."""
    try:
        yield
    except DiskFullError as exc:
        try:
            prepare_out_dir(out_dir, False, subdirs=subdirs)  # checks only, with False
            refused = False
        except FileExistsError:
            refused = True
        hint = " with overwrite=true" if refused and not overwrite else ""
        raise DiskFullError(f"{exc}; free space and rerun{hint}", exc.path, exc.errno) from None


def silent_references(tracks: Sequence[data_lib.Track], sources: Sequence[str],
                      block_samples: int = 2**18) -> None:
    """Refuse, before anything is scored, a track whose reference of a source is silent over
    the whole track (museval cannot score it). Read in blocks: the tracks are memory maps."""
    for track in tracks:
        refs = track.sources
        silent = set(range(refs.shape[0]))
        for start in range(0, refs.shape[-1], block_samples):
            silent &= set(silent_sources(refs[:, :, start:start + block_samples]))
            if not silent:
                break
        if silent:
            raise DataError(
                f"track '{track.name}': the reference of "
                f"{', '.join(sources[i] for i in sorted(silent))} is silent over the whole "
                "track; museval cannot score it (use metrics=sdr, or max_tracks / another split). "
                "Nothing was scored")


def evaluate(cfg: DictConfig | dict) -> dict[str, Any]:
    """Separate (or read) and score every track of a split; write the report.

    Args:
        cfg: the composed ``evaluate`` config (:func:`compose_evaluate`, or
            ``compose("evaluate", overrides)``), with a ``data`` group as in ``configs/data/``;
            with none, a checkpoint is scored on the dataset it was trained on.

    Returns:
        The summary as written to ``<out_dir>/summary.json``
        (:func:`waveunet.reporting.evaluation.build_summary`):
        ``aggregates`` (per metric and source, pooled frames and median of track medians),
        ``clipping``, ``tracks``, and ``meta`` (with ``out_dir``, the scored rate and timings).
    """
    s = typed(EvaluateConfig, cfg)
    with thread_scope(s.threads), ExitStack() as held:
        return _evaluate(s, held)


def _evaluate(s: EvaluateConfig, held: ExitStack) -> dict[str, Any]:
    """The evaluation; ``held``: what stays held until it ends (the out_dir's lock)."""
    t_start = time.perf_counter()
    data_cfg = s.data
    if data_cfg is None and s.checkpoint is not None:
        data_cfg = _said(checkpoint_data(s.checkpoint))
    if data_cfg is None or not (data_cfg.get("format") or data_cfg.get("datasets")):
        raise ConfigError("data: no dataset chosen; give data=<preset> (musdb | musdb_hq | "
                          "folder | ...) and data.root=DIR")
    # One dataset or several combined (data.datasets): read alike, checked once.
    data = data_lib.data_spec(data_cfg)
    scored = [d for d in data.datasets if s.split in d.splits] or list(data.datasets)

    source: ModelEstimates | DiskEstimates = (
        ModelEstimates(s) if s.checkpoint is not None else DiskEstimates(s, data_cfg)
    )
    rate = s.sample_rate_hz or source.default_rate_hz
    channels = s.channels or source.default_channels
    out_dir = (Path(s.out_dir).expanduser() if s.out_dir is not None
               else _default_out_dir(s, source, data.name))
    museval_dir = out_dir / MUSEVAL_SUBSETS[s.split]
    held.enter_context(held_folder(out_dir, setting="out_dir", sweep=MUSEVAL_FOLDERS,
                                   otherwise="give this evaluation another out_dir=..."))
    try:  # the one out_dir guard, before any work; overwrite=true clears stale files
        prepare_out_dir(out_dir, s.overwrite, subdirs=MUSEVAL_FOLDERS)
    except FileExistsError as exc:
        raise ConfigError(f"out_dir: {exc}") from exc
    held.enter_context(rerun_said_on_full_disk(out_dir, s.overwrite, MUSEVAL_FOLDERS))

    tracks = data_lib.load_split(data_cfg, s.split, sample_rate_hz=rate, channels=channels,
                                 sources=source.sources, progress=s.progress)
    if s.max_tracks is not None:
        tracks = tracks[: s.max_tracks]
    source.check(tracks)
    sources = list(source.sources)
    if s.metrics == "bss":
        if len(sources) < 2:
            raise ConfigError(
                f"metrics=bss needs at least 2 sources scored together, got {sources}"
            )
        silent_references(tracks, sources)
    names = [t.name for t in tracks]
    waveform_name = s.waveform_track or names[0]
    if waveform_name not in names:
        raise ConfigError(f"waveform_track: {waveform_name!r} is not an evaluated track "
                          f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    device = resolve_device(s.device)
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
        est_np = np.asarray(est)
        if s.figures and track.name == waveform_name:
            waveform.append(WaveformSpec(
                track.name, refs_np, est_np, rate, raw=None if raw is None else np.asarray(raw),
                passage_seconds=s.waveform_seconds, bounds=source.bounds))
        return refs_np, est_np

    def bss_job(track: data_lib.Track) -> Callable[[], BssJob]:
        def load() -> BssJob:
            refs, est = score(track)
            silent = silent_sources(est)
            if silent:
                raise DataError(
                    f"track '{track.name}': the estimate of "
                    f"{', '.join(sources[i] for i in silent)} "
                    "is silent over the whole track; museval cannot score it (use metrics=sdr, or "
                    "max_tracks / another split)"
                )
            return BssJob(track.name, sources, refs, est)

        return load

    if s.metrics == "bss":
        t0 = time.perf_counter()
        workers = s.workers if s.workers is not None else default_bss_workers()
        scores = evaluate_tracks([bss_job(t) for t in tracks], rate, json_dir=museval_dir,
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
        "data": data.name,
        # of the datasets that give the split (a combined config's test split: MUSDB18's)
        "data_format": ", ".join(dict.fromkeys(d.format for d in scored)),
        "data_root": ", ".join(d.root for d in scored if d.root),
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
        "torch_threads": torch.get_num_threads(),
        "out_dir": str(out_dir.resolve()),
        "timing": {k: round(v, 3) for k, v in timing.items()},
    }
    if source.replaced:
        meta["nonfinite_replaced"] = source.replaced
    if s.metrics == "bss":
        meta["museval_json"] = (f"{museval_dir.name}/<track>.json (museval's per-track format; "
                                "museval.MethodStore().add_eval_dir(out_dir) loads it)")
    return write_report(out_dir, [results[n] for n in names], meta=meta,
                        waveform=waveform[0] if waveform else None, checked=True,
                        draw=s.figures)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="waveunet evaluate: %(message)s")

    def run(cfg: DictConfig, overrides: list[str]) -> int:
        print(terminal_summary(evaluate(cfg)))
        return 0

    return run_command("evaluate", HELP, "evaluate", argv, run, compose_evaluate)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
