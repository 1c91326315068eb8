"""SDR: museval's BSSEval v4 SDR in torch, and both aggregations over frames and tracks (see
:mod:`waveunet.metrics`; museval itself, for SDR/ISR/SIR/SAR, is :mod:`.bsseval`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .arrays import ArrayLike, prepare_pair
from .bsseval import check_frame_params

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


