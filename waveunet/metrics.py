"""SDR, BSSEval and clipping statistics: the one place where separation quality is measured.

Everything here is model independent and works on ``(S, C, T)`` arrays (sources, channels,
samples), torch tensors (CPU or GPU) or numpy arrays alike. Computation is in float64.

Two SDR paths:

* :func:`framewise_sdr` -- fast, vectorised torch reimplementation of museval's (BSSEval v4)
  SDR. museval's SDR reduces exactly to a framewise SNR, so no projection filters are needed;
  it reproduces museval's frame and NaN rules to ~1e-12 dB.
* :func:`bss_eval` / :func:`evaluate_tracks` -- museval itself, for SDR/ISR/SIR/SAR (slow:
  512-tap projection filters), with per-track JSON in museval's own format.

Aggregation follows both conventions in use, and says which is which:

* :func:`aggregate_pooled` -- the Wave-U-Net papers: all 1-s frames of all tracks pooled.
* :func:`aggregate_tracks` -- SiSEC / Open-Unmix / Demucs: median over frames per track, then
  median (and mean) over tracks.

Clipping statistics (:func:`clipping_stats`, :func:`difference_error_share`) measure what the
bounded output does to the estimate: how often it hits the bound, by how much a linear output
overshoots before the test-time clip, and how much a tanh output attenuates loud passages.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch

from waveunet.errors import ConfigError
from waveunet.files import atomic_write_text

ArrayLike = torch.Tensor | np.ndarray

BSS_METRICS = ("SDR", "ISR", "SIR", "SAR")


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _as_float64(x: ArrayLike, name: str, device: torch.device | None = None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        raise ConfigError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if device is not None:
        t = t.to(device)
    return t.to(torch.float64)


def _check_sct(t: torch.Tensor, name: str) -> None:
    if t.ndim != 3:
        raise ConfigError(f"{name}: expected shape (sources, channels, samples), got {tuple(t.shape)}")


def _pad_or_truncate(estimates: torch.Tensor, n_samples: int) -> torch.Tensor:
    """museval.pad_or_truncate: estimates are cut or zero-padded at the end to the reference length."""
    t = estimates.shape[-1]
    if t > n_samples:
        return estimates[..., :n_samples]
    if t < n_samples:
        return torch.nn.functional.pad(estimates, (0, n_samples - t))
    return estimates


def _prepare_pair(
    references: ArrayLike, estimates: ArrayLike
) -> tuple[torch.Tensor, torch.Tensor]:
    ref = _as_float64(references, "references")
    est = _as_float64(estimates, "estimates", device=ref.device)
    _check_sct(ref, "references")
    _check_sct(est, "estimates")
    if ref.shape[:2] != est.shape[:2]:
        raise ConfigError(
            f"estimates: (sources, channels) {tuple(est.shape[:2])} differ from references "
            f"{tuple(ref.shape[:2])}"
        )
    return ref, _pad_or_truncate(est, ref.shape[-1])


def _check_frame_params(win: int, hop: int) -> None:
    for name, v in (("win", win), ("hop", hop)):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{name}: must be a positive integer number of samples, got {v!r}")


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bounds: expected (low, high), got {bounds!r}") from exc
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"bounds: need finite low < high, got {bounds!r}")
    return low, high


# --------------------------------------------------------------------------------------------
# Framewise SDR (museval-exact)
# --------------------------------------------------------------------------------------------


def num_frames(n_samples: int, win: int = 44100, hop: int = 44100) -> int:
    """museval's frame count: floor((n - win + hop) / hop) if win < n, else 1 (whole signal).

    The partial tail is dropped; a signal no longer than one window is one (short) frame.
    """
    _check_frame_params(win, hop)
    if win < n_samples:
        return (n_samples - win + hop) // hop
    return 1


def _frames(x: torch.Tensor, win: int, hop: int) -> torch.Tensor:
    """(..., T) -> (..., F, W) view following museval's Framing (full frames, or the whole signal)."""
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
    _check_frame_params(win, hop)
    ref, est = _prepare_pair(references, estimates)
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
                f"{name}: source(s) {silent} are silent over the whole signal; museval cannot score them"
            )
    win = int(round(win_seconds * sample_rate_hz))
    hop = int(round(hop_seconds * sample_rate_hz))
    _check_frame_params(win, hop)
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
        job.references, job.estimates, sample_rate_hz, win_seconds=win_seconds, hop_seconds=hop_seconds
    )
    if json_dir is not None:
        text = museval_track_json(
            job.name, job.source_names, scores, win_seconds=win_seconds, hop_seconds=hop_seconds
        )
        atomic_write_text(os.path.join(json_dir, safe_filename(job.name) + ".json"), text)
    return job.name, scores


def safe_filename(name: str) -> str:
    """``name`` with path separators and other odd characters replaced, for a file name."""
    keep = "".join(c if c.isalnum() or c in "-_. " else "_" for c in name).strip(". ")
    return keep or "track"


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
                    pending.add(pool.submit(_run_bss_job, load(j), *args))
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


def _float_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


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
    out.update(n_frames=int(pooled.size), n_nan_frames=n_nan, n_inf_frames=n_inf, n_tracks=len(tracks))
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


# --------------------------------------------------------------------------------------------
# Clipping statistics
# --------------------------------------------------------------------------------------------


def _db(ratio: float, power: bool = False) -> float | None:
    if not (math.isfinite(ratio) and ratio > 0):
        return None
    return (10.0 if power else 20.0) * math.log10(ratio)


def at_bounds(x: ArrayLike, low: float, high: float | None) -> ArrayLike:
    """Samples of ``x`` at or beyond a bound (``high=None``: the lower one only), as a mask.

    On stems: where the test-time clip acted, or a squashing activation reached the bound in
    float32. Works on numpy arrays and torch tensors alike; the counts of :func:`bound_hits`
    and the red marks of every figure come from here.
    """
    marks = x <= low
    return marks if high is None else marks | (x >= high)


def beyond_bounds(x: ArrayLike, low: float, high: float | None) -> ArrayLike:
    """Samples of ``x`` strictly beyond a bound: on raw output, where the test-time clip acts."""
    marks = x < low
    return marks if high is None else marks | (x > high)


def bound_hits(
    estimates: ArrayLike, raw: ArrayLike | None, low: float, high: float | None
) -> list[dict[str, Any]]:
    """Per source, how often the output sits at its bounds; needs no reference.

    * ``clipped_count`` / ``fraction_clipped``: estimate samples at or beyond a bound
      (the test-time clip hit them, or a squashing activation reached the bound in
      float32).
    * ``overshoot_count`` / ``fraction_overshoot``: ``raw`` samples (the output before
      the test-time clip) strictly beyond a bound; ``overshoot_mean`` /
      ``overshoot_max``: by how much, in signal units (None when there are none, or
      without ``raw``).
    * ``n_samples``: channels x samples, to weight fractions across tracks.

    ``high=None`` bounds below only. The separator's per-song report and the
    evaluation's clipping statistics both come from here.
    """
    est = _as_float64(estimates, "estimates")
    _check_sct(est, "estimates")
    n = est.shape[1] * est.shape[2]
    dims = (1, 2)
    clipped = at_bounds(est, low, high).sum(dim=dims)
    if raw is not None:
        r = _as_float64(raw, "raw", device=est.device)
        _check_sct(r, "raw")
        if r.shape != est.shape:
            raise ConfigError(f"raw: shape {tuple(r.shape)} differs from the estimates' {tuple(est.shape)}")
        over = (low - r).clamp_min(0.0)
        if high is not None:
            over = torch.maximum(over, (r - high).clamp_min(0.0))
        n_over = (over > 0).sum(dim=dims)
        over_sum, over_max = over.sum(dim=dims), over.amax(dim=dims)
    hits = []
    for s in range(est.shape[0]):
        d: dict[str, Any] = {"n_samples": n, "clipped_count": int(clipped[s]),
                             "fraction_clipped": int(clipped[s]) / n if n else 0.0}
        if raw is None:
            d.update(overshoot_count=None, fraction_overshoot=None, overshoot_mean=None, overshoot_max=None)
        else:
            k = int(n_over[s])
            d.update(overshoot_count=k, fraction_overshoot=k / n if n else 0.0,
                     overshoot_mean=over_sum[s].item() / k if k else None,
                     overshoot_max=over_max[s].item() if k else None)
        hits.append(d)
    return hits


BOUND_KEYS = ("clipped_count", "fraction_clipped", "saturated_count", "fraction_saturated",
              "overshoot_count", "fraction_overshoot", "overshoot_mean", "overshoot_max")


def _check_saturation(saturation_fraction: float) -> None:
    if not 0 < saturation_fraction <= 1:
        raise ConfigError(f"saturation_fraction: must be in (0, 1], got {saturation_fraction}")


def bound_stats(
    estimates: ArrayLike,
    raw: ArrayLike | None = None,
    *,
    bounds: tuple[float, float] = (-1.0, 1.0),
    saturation_fraction: float = 0.99,
) -> list[dict[str, Any]]:
    """The reference-free part of :func:`clipping_stats`, per source: :func:`bound_hits` plus
    ``saturated_count`` / ``fraction_saturated`` (|u| > saturation_fraction).

    Compute it on the output at the model's own rate: resampling afterwards rings past the
    bounds, which would count as clipping, overshoot or saturation. ``raw`` must have the
    estimates' shape. Keys: :data:`BOUND_KEYS` and ``n_samples``.
    """
    low, high = _check_bounds(bounds)
    _check_saturation(saturation_fraction)
    est = _as_float64(estimates, "estimates")
    hits = bound_hits(est, raw, low, high)
    centre, half = (low + high) / 2.0, (high - low) / 2.0
    saturated = (((est - centre) / half).abs() > saturation_fraction).sum(dim=(1, 2))
    for s, d in enumerate(hits):
        n = d["n_samples"]
        d.update(saturated_count=int(saturated[s]), fraction_saturated=int(saturated[s]) / n if n else 0.0)
    return hits


def clipping_stats(
    estimates: ArrayLike,
    references: ArrayLike,
    *,
    raw: ArrayLike | None = None,
    bounds: tuple[float, float] = (-1.0, 1.0),
    activation: str = "linear",
    saturation_fraction: float = 0.99,
    loud_fraction: float = 0.5,
    bound_statistics: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """What the bounded output did to each source of one track.

    Bounds are handled in normalised units u = (y - centre) / half_width with
    centre = (low + high) / 2 and half_width = (high - low) / 2, so for the default (-1, 1)
    u = y. All statistics pool both channels and all samples of a source.

    Args:
        estimates: (S, C, T) final estimates (after any test-time clip); padded/truncated to T.
        references: (S, C, T) true sources.
        raw: (S, C, T) model output before the test-time clip, or None (estimates read from
            disk). For tanh, raw is the tanh output itself.
        bounds: (low, high) of the output range.
        activation: output activation name, recorded in the result (e.g. "tanh", "linear").
        saturation_fraction: |u| above this counts as saturated (tanh's near-bound region).
        loud_fraction: reference samples with |u_ref| >= this are "loud" (near full scale).
        bound_statistics: per source, :func:`bound_stats` computed elsewhere (at the model's
            rate, when the estimates were resampled for scoring); then ``raw`` and
            ``saturation_fraction`` are not used and the bound keys are copied from it.

    Returns:
        One dict per source with:

        * ``fraction_clipped`` (``clipped_count``): estimate samples at or beyond a bound
          (y <= low or y >= high).
        * ``fraction_overshoot``: raw samples strictly beyond a bound (None if raw is None);
          ``overshoot_mean`` / ``overshoot_max``: |raw - centre| - half_width over those samples
          (in signal units; None when there are none); ``overshoot_count``: how many.
        * ``fraction_saturated`` (``saturated_count``): estimate samples with |u| > saturation_fraction (for tanh,
          the region where its gradient has vanished; for a clipped linear output it includes
          the clipped samples).
        * ``peak_ratio`` = max|est| / max|ref| and ``rms_ratio`` = rms(est) / rms(ref), each
          also in dB (``peak_ratio_db``, ``rms_ratio_db``, 20*log10).
        * ``loud_gain``: on the loud samples L = {|u_ref| >= loud_fraction}, the least-squares
          gain g = sum_L(est*ref) / sum_L(est^2) minimising sum_L (g*est - ref)^2, i.e. the
          factor the estimate must be multiplied by to best match the reference there.
          g > 1: loud passages attenuated (tanh); g < 1: too loud. ``loud_gain_db`` =
          20*log10(g); ``fraction_loud`` = |L| / samples. None if L is empty or the estimate is
          zero on L.
        * ``n_samples`` (C*T, to weight fractions across tracks), ``activation``, ``bounds``.
    """
    low, high = _check_bounds(bounds)
    _check_saturation(saturation_fraction)
    if not 0 < loud_fraction <= 1:
        raise ConfigError(f"loud_fraction: must be in (0, 1], got {loud_fraction}")
    ref, est = _prepare_pair(references, estimates)
    centre, half = (low + high) / 2.0, (high - low) / 2.0
    n_src, n_ch, n_t = ref.shape
    n = n_ch * n_t
    if n == 0:
        raise ConfigError("references: no samples")
    dims = (1, 2)

    u_ref = ((ref - centre) / half).abs()
    peak_est = (est - centre).abs().amax(dim=dims)
    peak_ref = (ref - centre).abs().amax(dim=dims)
    rms_est = est.square().mean(dim=dims).sqrt()
    rms_ref = ref.square().mean(dim=dims).sqrt()
    loud = u_ref >= loud_fraction
    loud_n = loud.sum(dim=dims)
    er = (est * ref * loud).sum(dim=dims)
    ee = (est.square() * loud).sum(dim=dims)

    if bound_statistics is None:
        if raw is not None:
            r = _as_float64(raw, "raw", device=ref.device)
            _check_sct(r, "raw")
            if r.shape[:2] != ref.shape[:2]:
                raise ConfigError(f"raw: (sources, channels) {tuple(r.shape[:2])} differ from references")
            raw = _pad_or_truncate(r, n_t)
        bound_statistics = bound_stats(est, raw, bounds=(low, high), saturation_fraction=saturation_fraction)
    elif len(bound_statistics) != n_src:
        raise ConfigError(f"bound_statistics: {len(bound_statistics)} entries for {n_src} sources")

    stats = []
    for s in range(n_src):
        d: dict[str, Any] = {"activation": activation, "bounds": [low, high], "n_samples": n}
        d.update({k: bound_statistics[s][k] for k in BOUND_KEYS})
        pr = peak_est[s].item() / peak_ref[s].item() if peak_ref[s] > 0 else math.nan
        rr = rms_est[s].item() / rms_ref[s].item() if rms_ref[s] > 0 else math.nan
        d.update(
            peak_ratio=_float_or_none(pr),
            peak_ratio_db=_db(pr),
            rms_ratio=_float_or_none(rr),
            rms_ratio_db=_db(rr),
        )
        g = er[s].item() / ee[s].item() if ee[s] > 0 else math.nan
        d.update(
            loud_gain=_float_or_none(g),
            loud_gain_db=_db(g),
            fraction_loud=loud_n[s].item() / n,
        )
        stats.append(d)
    return stats


def difference_error_share(
    estimates: ArrayLike, references: ArrayLike, *, difference_index: int = -1
) -> dict[str, Any]:
    """How much of a difference-output source's error is the other sources' gain shortfall.

    With a difference output the last source is d_est = mix - sum_k est_k, so (when
    mix = sum of references) its error is e = ref_d - d_est = sum_k (est_k - ref_k): every
    error of the predicted sources lands in it. If a predicted source is only attenuated,
    ref_k ~= g_k * est_k and its contribution is (1 - g_k) * est_k.

    Definition (pooled over channels and samples of the track):

        e          = ref_d - est_d                       (the difference source's error)
        a(g)       = sum_k (1 - g_k) * est_k             (error explained by gains g_k)
        g*         = argmin_g |e - a(g)|^2               (joint least squares over the K
                                                          predicted sources)
        share      = 1 - |e - a(g*)|^2 / |e|^2           in [0, 1], as g = 1 (a = 0) is allowed

    ``share`` is the fraction of the difference source's error energy that a per-source gain
    correction of the predicted sources would remove. Also returned: the gains g*, the
    difference source's global SDR 10*log10(|ref_d|^2/|e|^2) and the SDR after the correction
    (``sdr_gain_corrected_db``).

    Args:
        estimates, references: (S, C, T), S >= 2; ``difference_index`` picks the difference
            source (default: last), the others are the predicted sources.
    """
    ref, est = _prepare_pair(references, estimates)
    n_src = ref.shape[0]
    if n_src < 2:
        raise ConfigError(f"estimates: need a difference source and at least one other, got {n_src}")
    if not -n_src <= difference_index < n_src:
        raise ConfigError(f"difference_index: {difference_index} out of range for {n_src} sources")
    di = difference_index % n_src
    others = [k for k in range(n_src) if k != di]
    e = (ref[di] - est[di]).reshape(-1)
    basis = est[others].reshape(len(others), -1)  # (K, N): a(g) = sum_k c_k est_k, c = 1 - g
    gram = basis @ basis.T
    rhs = basis @ e
    # lstsq tolerates silent (all-zero) predicted sources, whose gain is then left at 1.
    c = torch.linalg.lstsq(gram.cpu(), rhs.cpu().unsqueeze(-1)).solution.squeeze(-1).to(e.device)
    resid = e - c @ basis
    err = e.square().sum().item()
    res = resid.square().sum().item()
    sig = ref[di].square().sum().item()
    share = 1.0 - res / err if err > 0 else math.nan
    return {
        "difference_source_index": di,
        "other_source_indices": others,
        "gains": [1.0 - v for v in c.tolist()],
        "error_energy": err,
        "explained_share": _float_or_none(min(max(share, 0.0), 1.0)) if err > 0 else None,
        "sdr_db": _db(sig / err, power=True) if err > 0 else None,
        "sdr_gain_corrected_db": _db(sig / res, power=True) if res > 0 else None,
    }


def to_jsonable(obj: Any) -> Any:
    """Numbers, arrays and tensors as plain JSON values; NaN/inf become None (strict JSON)."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def dumps_json(obj: Any) -> str:
    """Strict JSON (no NaN tokens) of :func:`to_jsonable` (obj)."""
    return json.dumps(to_jsonable(obj), indent=2, allow_nan=False)
