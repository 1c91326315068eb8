"""SDR: museval's BSSEval v4 SDR in torch, museval itself for SDR/ISR/SIR/SAR, and both
aggregations over frames and tracks (see :mod:`waveunet.metrics`)."""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, space_checked
from ..files import atomic_write_text, safe_filename
from .arrays import ArrayLike, check_frame_params, prepare_pair

BSS_METRICS = ("SDR", "ISR", "SIR", "SAR")


# --------------------------------------------------------------------------------------------
# Framewise SDR (museval-exact)
# --------------------------------------------------------------------------------------------


def num_frames(n_samples: int, win: int = 44100, hop: int = 44100) -> int:
    """museval's frame count: floor((n - win + hop) / hop) if win < n, else 1 (whole signal).

    The partial tail is dropped; a signal no longer than one window is one (short) frame.
    """
    check_frame_params(win, hop)
    if win < n_samples:
        return (n_samples - win + hop) // hop
    return 1


def _frames(x: torch.Tensor, win: int, hop: int) -> torch.Tensor:
    """(..., T) -> (..., F, W) view following museval's Framing (full frames, or the whole
    signal)."""
    n = x.shape[-1]
    if win < n:
        return x.unfold(-1, win, hop)
    return x.unsqueeze(-2)


def framewise_sdr(
    references: ArrayLike, estimates: ArrayLike, *, win: int = 44100, hop: int = 44100
) -> torch.Tensor:
    """museval's (BSSEval v4 images) SDR per source and frame, without projection filters.

    Args:
        references: (S, C, T) true sources.
        estimates: (S, C, T') estimated sources; zero-padded or truncated to T (as museval).
        win, hop: frame length and hop in samples (museval defaults: 1 s at 44.1 kHz).

    Returns:
        float64 tensor (S, F) on the references' device, F = :func:`num_frames` (T, win, hop).
        Per frame: 10*log10(sum(s^2) / sum((s - s_hat)^2)), sums over both channels and the
        frame's samples. museval's rules are reproduced exactly:

        * a frame is NaN for *every* source if any reference or any estimate is "silent" in it;
          silent means museval's test: the sum over channels is 0 at every sample of the frame
          (so an all-zero signal, but also one whose channels cancel exactly);
        * a zero error gives +inf (museval's ``_safe_db``); museval's own projections usually
          leave ~1e-30 of rounding error there, so perfect frames may differ (inf vs ~300 dB);
        * unlike ``museval.evaluate``, a source silent over the whole signal does not raise:
          all its frames (and so every source's frames) are NaN.
    """
    check_frame_params(win, hop)
    ref, est = prepare_pair(references, estimates)
    ref_f = _frames(ref, win, hop)  # (S, C, F, W)
    est_f = _frames(est, win, hop)
    num = ref_f.square().sum(dim=(1, 3))  # (S, F)
    den = (ref_f - est_f).square().sum(dim=(1, 3))
    sdr = 10.0 * torch.log10(num / den)
    # den == 0 -> +inf, as museval's _safe_db (also where num == 0; those frames become NaN below)
    sdr = torch.where(den == 0, torch.full_like(sdr, math.inf), sdr)
    # museval's _any_source_silent: channel sum identically zero over the frame.
    ref_silent = (_frames(ref.sum(dim=1), win, hop) == 0).all(dim=-1).any(dim=0)  # (F,)
    est_silent = (_frames(est.sum(dim=1), win, hop) == 0).all(dim=-1).any(dim=0)
    silent = ref_silent | est_silent
    return sdr.masked_fill(silent.unsqueeze(0), math.nan)


# --------------------------------------------------------------------------------------------
# museval: full BSSEval
# --------------------------------------------------------------------------------------------


def _to_numpy_sct(x: ArrayLike, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 3:
        raise ConfigError(f"{name}: expected shape (sources, channels, samples), got {arr.shape}")
    return arr.astype(np.float64, copy=False)


def silent_sources(arr: ArrayLike) -> list[int]:
    """Indices of the sources of an (S, C, T) array that are silent over the whole signal.

    museval's test: the sum over channels is 0 at every sample (museval cannot score those).
    """
    a = _to_numpy_sct(arr, "audio")
    return np.flatnonzero(np.all(a.sum(axis=1) == 0, axis=-1)).tolist()


def bss_eval(
    references: ArrayLike,
    estimates: ArrayLike,
    sample_rate_hz: int,
    *,
    win_seconds: float = 1.0,
    hop_seconds: float = 1.0,
) -> dict[str, np.ndarray]:
    """Full BSSEval v4 (``museval.evaluate``): SDR, ISR, SIR, SAR per source and frame.

    All sources of one task are scored together, as ``museval.eval_mus_track`` does for
    like-with-like comparisons (voice task: vocals with accompaniment; 4-source task: all four).
    Slow (tens of seconds per minute of audio); use :func:`framewise_sdr` for SDR alone.

    Args:
        references, estimates: (S, C, T) arrays; estimates padded/truncated to T by museval.
        sample_rate_hz: sample rate, to turn the window and hop into samples.

    Returns:
        {"SDR": (S, F), "ISR": ..., "SIR": ..., "SAR": ...} float64 numpy arrays.
    """
    import museval  # lazy: importing museval pulls in musdb, pandas and jsonschema

    if sample_rate_hz <= 0:
        raise ConfigError(f"sample_rate_hz: must be positive, got {sample_rate_hz}")
    ref = _to_numpy_sct(references, "references")
    est = _to_numpy_sct(estimates, "estimates")
    if ref.shape[:2] != est.shape[:2]:
        raise ConfigError(
            f"estimates: (sources, channels) {est.shape[:2]} differ from references {ref.shape[:2]}"
        )
    if ref.shape[0] < 2:
        # With one source BSSEval has no interference to measure; museval warns and misbehaves.
        raise ConfigError(f"references: BSSEval needs at least 2 sources, got {ref.shape[0]}")
    for name, arr in (("references", ref), ("estimates", est)):
        silent = silent_sources(arr)
        if silent:
            raise ConfigError(
                f"{name}: source(s) {silent} are silent over the whole signal; museval cannot "
                "score them"
            )
    win = int(round(win_seconds * sample_rate_hz))
    hop = int(round(hop_seconds * sample_rate_hz))
    check_frame_params(win, hop)
    sdr, isr, sir, sar = museval.evaluate(
        np.moveaxis(ref, 1, 2), np.moveaxis(est, 1, 2), win=win, hop=hop
    )
    return {"SDR": sdr, "ISR": isr, "SIR": sir, "SAR": sar}


def museval_track_json(
    track_name: str,
    source_names: Sequence[str],
    scores: dict[str, np.ndarray],
    *,
    win_seconds: float = 1.0,
    hop_seconds: float = 1.0,
) -> str:
    """Per-track JSON exactly as ``museval.eval_mus_track`` writes it (museval's own TrackStore:
    values quantised to 1e-5, inf written as NaN), validated against museval's schema."""
    from museval.aggregate import TrackStore

    store = TrackStore(track_name=track_name, win=win_seconds, hop=hop_seconds)
    for i, name in enumerate(source_names):
        store.add_target(target_name=name, values={m: scores[m][i].tolist() for m in BSS_METRICS})
    store.validate()
    return store.json


@dataclass
class BssJob:
    """One track to score with museval: (S, C, T) arrays and the source names in that order."""

    name: str
    source_names: Sequence[str]
    references: ArrayLike
    estimates: ArrayLike


def _run_bss_job(
    job: BssJob, sample_rate_hz: int, win_seconds: float, hop_seconds: float, json_dir: str | None
) -> tuple[str, dict[str, np.ndarray]]:
    scores = bss_eval(
        job.references,
        job.estimates,
        sample_rate_hz,
        win_seconds=win_seconds,
        hop_seconds=hop_seconds,
    )
    if json_dir is not None:
        text = museval_track_json(
            job.name, job.source_names, scores, win_seconds=win_seconds, hop_seconds=hop_seconds
        )
        path = os.path.join(json_dir, safe_filename(job.name) + ".json")
        with space_checked(path):
            atomic_write_text(path, text)
    return job.name, scores


# Ctrl-C in a terminal reaches every process of its group: this one reports it in one line.
# museval's workers take SIGINT only while they score (the job stops, and its KeyboardInterrupt
# comes back as the job's result, unprinted); a worker that waits for its next job ignores it,
# and one still starting holds it back until its first job, where either would print a
# traceback of its own. A spawned process inherits the signal mask of the thread that starts
# it, hence the mask around submit below; ignoring (not masking) covers the worker's threads.
_CTRL_C = {signal.SIGINT}


def _run_bss_job_in_worker(*args: Any) -> tuple[str, dict[str, np.ndarray]]:
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _CTRL_C)  # one held back stops the job now
        return _run_bss_job(*args)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the next job


@contextmanager
def _ctrl_c_held_back() -> Iterator[None]:
    """SIGINT held back in this thread meanwhile; delivered (KeyboardInterrupt) after."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _CTRL_C)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def evaluate_tracks(
    jobs: Iterable[BssJob] | Iterable[Callable[[], BssJob]],
    sample_rate_hz: int,
    *,
    json_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    win_seconds: float = 1.0,
    hop_seconds: float = 1.0,
    progress: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """Run :func:`bss_eval` on many tracks in worker processes, with a tqdm progress bar.

    Args:
        jobs: :class:`BssJob` s, or zero-argument callables returning one (loaded lazily in
            this process, so only ``workers`` tracks are held in memory and in flight at once).
        json_dir: if given, one ``<track>.json`` per track in museval's format is written there.
        workers: worker processes (default: min(CPU count, 4); museval peaks at ~4 GB per job).
            ``workers=0`` runs in this process (debugging, tests).

    Returns:
        {track name: {"SDR"|"ISR"|"SIR"|"SAR": (S, F) array}} in completion order.
    """
    from tqdm import tqdm

    jobs = list(jobs) if not isinstance(jobs, list) else jobs
    out_dir = None if json_dir is None else os.fspath(json_dir)
    n_workers = min(os.cpu_count() or 1, 4) if workers is None else workers
    if n_workers < 0:
        raise ConfigError(f"workers: must be >= 0, got {workers}")
    results: dict[str, dict[str, np.ndarray]] = {}
    args = (sample_rate_hz, win_seconds, hop_seconds, out_dir)

    def load(j: BssJob | Callable[[], BssJob]) -> BssJob:
        return j if isinstance(j, BssJob) else j()

    with tqdm(total=len(jobs), desc="bss_eval", unit="track", disable=not progress) as bar:
        if n_workers == 0:
            for j in jobs:
                name, scores = _run_bss_job(load(j), *args)
                results[name] = scores
                bar.update(1)
            return results
        # spawn, not fork: forking a process that has run torch/OpenMP threads can deadlock.
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn")) as pool:
            pending: set[Future[Any]] = set()
            it = iter(jobs)
            exhausted = False
            while pending or not exhausted:
                while not exhausted and len(pending) < n_workers:
                    try:
                        j = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    job = load(j)
                    with _ctrl_c_held_back():  # the worker it may start inherits the mask
                        pending.add(pool.submit(_run_bss_job_in_worker, job, *args))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    name, scores = fut.result()
                    results[name] = scores
                    bar.update(1)
    return results


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def _finite_frames(per_track_frames: Sequence[ArrayLike]) -> tuple[list[np.ndarray], int, int]:
    tracks = []
    n_nan = n_inf = 0
    for i, f in enumerate(per_track_frames):
        a = f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
        a = a.astype(np.float64).ravel()
        if a.size == 0:
            raise ConfigError(f"per_track_frames[{i}]: no frames")
        n_nan += int(np.isnan(a).sum())
        n_inf += int(np.isinf(a).sum())
        tracks.append(a[np.isfinite(a)])
    return tracks, n_nan, n_inf


def aggregate_pooled(per_track_frames: Sequence[ArrayLike]) -> dict[str, Any]:
    """Wave-U-Net papers' aggregation: pool all frames of all tracks (one source, one metric).

    NaN frames (silent) are dropped; so are +inf frames (perfect estimate), because museval's
    JSON -- from which the papers' numbers were computed -- stores inf as NaN. Statistics as in
    the original ``compute_mean_metrics``: median, MAD = median(|x - median|) (unscaled), mean,
    SD (population, ddof=0).

    Args:
        per_track_frames: one 1-D array of frame values per track.

    Returns:
        {"aggregation": "pooled_frames", "median", "mad", "mean", "std", "n_frames",
        "n_nan_frames", "n_inf_frames", "n_tracks"}; statistics are None without any frame.
    """
    tracks, n_nan, n_inf = _finite_frames(per_track_frames)
    pooled = np.concatenate(tracks) if tracks else np.zeros(0)
    out: dict[str, Any] = {"aggregation": "pooled_frames"}
    if pooled.size:
        med = float(np.median(pooled))
        out.update(
            median=med,
            mad=float(np.median(np.abs(pooled - med))),
            mean=float(pooled.mean()),
            std=float(pooled.std()),
        )
    else:
        out.update(median=None, mad=None, mean=None, std=None)
    out.update(
        n_frames=int(pooled.size), n_nan_frames=n_nan, n_inf_frames=n_inf, n_tracks=len(tracks)
    )
    return out


def aggregate_tracks(per_track_frames: Sequence[ArrayLike]) -> dict[str, Any]:
    """SiSEC / museval EvalStore aggregation: median over frames per track, then over tracks.

    Non-finite frames are dropped as in :func:`aggregate_pooled`; a track without any finite
    frame has no median (None) and is left out of the across-track statistics.

    Returns:
        {"aggregation": "median_of_track_medians", "median" (over tracks of per-track medians),
        "mean" (over tracks of per-track medians), "track_medians" (list, per track),
        "n_tracks" (tracks with a median)}.
    """
    tracks, _, _ = _finite_frames(per_track_frames)
    medians = [float(np.median(t)) if t.size else None for t in tracks]
    valid = np.array([m for m in medians if m is not None])
    return {
        "aggregation": "median_of_track_medians",
        "median": float(np.median(valid)) if valid.size else None,
        "mean": float(valid.mean()) if valid.size else None,
        "track_medians": medians,
        "n_tracks": int(valid.size),
    }


