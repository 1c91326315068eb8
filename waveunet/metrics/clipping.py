"""Clipping statistics: what the bounded output does to the estimate (see :mod:`waveunet.metrics`).

How often it sits at the bounds (:func:`bound_hits`, :func:`bound_stats`; masks from
:func:`at_bounds` / :func:`beyond_bounds`, which every figure marks with), by how much a linear
output overshoots before the test-time clip, how much a tanh output attenuates loud passages
(:func:`clipping_stats`), and how much of a difference source's error is the other sources'
gain (:func:`difference_error_share`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError
from .arrays import (
    ArrayLike,
    as_float64,
    check_bounds,
    check_sct,
    db,
    float_or_none,
    pad_or_truncate,
    prepare_pair,
)


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
    est = as_float64(estimates, "estimates")
    check_sct(est, "estimates")
    n = est.shape[1] * est.shape[2]
    dims = (1, 2)
    clipped = at_bounds(est, low, high).sum(dim=dims)
    if raw is not None:
        r = as_float64(raw, "raw", device=est.device)
        check_sct(r, "raw")
        if r.shape != est.shape:
            raise ConfigError(
                f"raw: shape {tuple(r.shape)} differs from the estimates' {tuple(est.shape)}"
            )
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
            d.update(
                overshoot_count=None,
                fraction_overshoot=None,
                overshoot_mean=None,
                overshoot_max=None,
            )
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
    low, high = check_bounds(bounds)
    _check_saturation(saturation_fraction)
    est = as_float64(estimates, "estimates")
    hits = bound_hits(est, raw, low, high)
    centre, half = (low + high) / 2.0, (high - low) / 2.0
    saturated = (((est - centre) / half).abs() > saturation_fraction).sum(dim=(1, 2))
    for s, d in enumerate(hits):
        n = d["n_samples"]
        d.update(
            saturated_count=int(saturated[s]),
            fraction_saturated=int(saturated[s]) / n if n else 0.0,
        )
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
        * ``fraction_saturated`` (``saturated_count``): estimate samples with
          |u| > saturation_fraction (for tanh,
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
    low, high = check_bounds(bounds)
    _check_saturation(saturation_fraction)
    if not 0 < loud_fraction <= 1:
        raise ConfigError(f"loud_fraction: must be in (0, 1], got {loud_fraction}")
    ref, est = prepare_pair(references, estimates)
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
            r = as_float64(raw, "raw", device=ref.device)
            check_sct(r, "raw")
            if r.shape[:2] != ref.shape[:2]:
                raise ConfigError(
                    f"raw: (sources, channels) {tuple(r.shape[:2])} differ from references"
                )
            raw = pad_or_truncate(r, n_t)
        bound_statistics = bound_stats(
            est, raw, bounds=(low, high), saturation_fraction=saturation_fraction
        )
    elif len(bound_statistics) != n_src:
        raise ConfigError(f"bound_statistics: {len(bound_statistics)} entries for {n_src} sources")

    stats = []
    for s in range(n_src):
        d: dict[str, Any] = {"activation": activation, "bounds": [low, high], "n_samples": n}
        d.update({k: bound_statistics[s][k] for k in BOUND_KEYS})
        pr = peak_est[s].item() / peak_ref[s].item() if peak_ref[s] > 0 else math.nan
        rr = rms_est[s].item() / rms_ref[s].item() if rms_ref[s] > 0 else math.nan
        d.update(
            peak_ratio=float_or_none(pr),
            peak_ratio_db=db(pr),
            rms_ratio=float_or_none(rr),
            rms_ratio_db=db(rr),
        )
        g = er[s].item() / ee[s].item() if ee[s] > 0 else math.nan
        d.update(
            loud_gain=float_or_none(g),
            loud_gain_db=db(g),
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
    ref, est = prepare_pair(references, estimates)
    n_src = ref.shape[0]
    if n_src < 2:
        raise ConfigError(
            f"estimates: need a difference source and at least one other, got {n_src}"
        )
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
        "explained_share": float_or_none(min(max(share, 0.0), 1.0)) if err > 0 else None,
        "sdr_db": db(sig / err, power=True) if err > 0 else None,
        "sdr_gain_corrected_db": db(sig / res, power=True) if res > 0 else None,
    }


