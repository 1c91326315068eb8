"""Every figure the project draws, and the one figure writer.

:func:`save_figure` writes a matplotlib figure atomically and frees it; every figure below goes
through it. Samples at or beyond the output bounds are marked red everywhere with
:func:`bound_marks` (built on :func:`waveunet.metrics.at_bounds` / ``beyond_bounds``, the same
rule the clipping statistics count). Figures draw what they are given: loading models, separating
and measuring happen in the evaluation and the experiments.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..files import atomic_write
from ..metrics import at_bounds, beyond_bounds
from .format import number


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede the pyplot import in a fresh process
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> None:
    """Write a figure as PNG atomically, then free it."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        pyplot().close(fig)


# --------------------------------------------------------------------------------------------
# Which samples and which passage a figure shows
# --------------------------------------------------------------------------------------------


def bound_marks(est: np.ndarray, raw: np.ndarray | None, low: float,
                high: float | None) -> np.ndarray:
    """Samples to mark: the estimate at or beyond a bound, or ``raw`` (before the clip) beyond it.

    ``high=None`` (a one-sided head: relu, softplus) marks the lower bound only.
    """
    marks = at_bounds(est, low, high)
    return marks if raw is None else marks | beyond_bounds(raw, low, high)


def loudest_passage(references: np.ndarray, length: int) -> int:
    """Start of the ``length``-sample window with the most energy in the sum of references."""
    mix = references.sum(axis=0)
    energy = np.square(mix).sum(axis=0)
    if length >= energy.size:
        return 0
    c = np.concatenate([[0.0], np.cumsum(energy)])
    return int(np.argmax(c[length:] - c[:-length]))


def passage_preference(peak: float, ratio: float) -> tuple[bool, float]:
    """How good a passage is for showing one source: others silent first, then loudest."""
    return ratio < 1e-4, peak if ratio < 1e-4 else -ratio


def quiet_passage(references: np.ndarray, source: int, length: int) -> tuple[int, float, float]:
    """Start of the loudest ``length``-sample window where every source but ``source`` is silent.

    Returns (start, peak of the source there, energy ratio others / source). The search is on
    a quarter-window grid; when no window has silent others, the one where they are quietest
    relative to the source is returned (its ratio says so).
    """
    total = references.shape[-1]
    length = min(length, total)
    hop = max(1, length // 4)
    target = references[source]
    others = np.delete(references, source, axis=0)
    best, best_key = (0, 0.0, math.inf), None
    for start in np.arange(0, total - length + 1, hop):
        t = target[:, start:start + length]
        e_t = float(np.square(t).sum())
        e_o = float(np.square(others[:, :, start:start + length]).sum()) if others.size else 0.0
        ratio = e_o / e_t if e_t > 0 else math.inf
        peak = float(np.abs(t).max())
        key = passage_preference(peak, ratio)
        if best_key is None or key > best_key:
            best, best_key = (int(start), peak, ratio), key
    return best


def _bound_lines(ax: Any, low: float, high: float | None) -> None:
    for b in (low, high):
        if b is not None:
            ax.axhline(b, color="red", lw=0.3, ls="--")


def _mark(ax: Any, t: np.ndarray, y: np.ndarray, marks: np.ndarray, size: float,
          label: str | None = None) -> None:
    ax.scatter(t[marks], y[marks], s=size, color="red", label=label)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def sdr_boxplot(path: str | os.PathLike, sources: Sequence[str], frames: Sequence[np.ndarray],
                n_tracks: int) -> None:
    """One box per source of its finite 1-s SDR frames, pooled over tracks."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 * len(sources) + 2, 4))
    ax.boxplot([f[np.isfinite(f)] for f in frames], showfliers=False)
    ax.set_xticks(range(1, len(sources) + 1), sources)
    ax.set_ylabel("SDR (dB), 1-s frames pooled over tracks")
    ax.set_title(f"SDR per source ({n_tracks} tracks)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def evaluation_waveform(path: str | os.PathLike, track_name: str, source_names: Sequence[str],
                        references: np.ndarray, estimates: np.ndarray, raw: np.ndarray | None,
                        sample_rate_hz: int, passage_seconds: float,
                        bounds: tuple[float, float], channel: int = 0) -> None:
    """Reference and estimate of every source on the track's loudest passage, bounds in red."""
    plt = pyplot()
    low, high = bounds
    n = max(1, int(passage_seconds * sample_rate_hz))
    start = loudest_passage(references, n)
    sl = slice(start, min(start + n, references.shape[-1]))
    t = np.arange(sl.start, sl.stop) / sample_rate_hz
    n_src = references.shape[0]
    fig, axes = plt.subplots(2 * n_src, 1, figsize=(10, 2.0 * 2 * n_src), sharex=True)
    axes = np.atleast_1d(axes)
    for s in range(n_src):
        name = source_names[s] if s < len(source_names) else f"source {s}"
        r = references[s, channel, sl]
        e = estimates[s, channel, sl] if estimates.shape[-1] >= sl.stop else np.zeros_like(r)
        ax_r, ax_e = axes[2 * s], axes[2 * s + 1]
        ax_r.plot(t, r, lw=0.5, color="tab:blue")
        ax_r.set_ylabel(f"{name}\nreference", fontsize=8)
        if raw is not None and raw.shape[-1] >= sl.stop:
            w = raw[s, channel, sl]
            ax_e.plot(t, w, lw=0.4, color="0.7", label="raw output")
            _mark(ax_e, t, w, beyond_bounds(w, low, high), 1, "raw beyond bound")
        ax_e.plot(t, e, lw=0.5, color="tab:green", label="estimate")
        _mark(ax_e, t, e, at_bounds(e, low, high), 1, "at/beyond bound")
        ax_e.set_ylabel(f"{name}\nestimate", fontsize=8)
        for ax in (ax_r, ax_e):
            _bound_lines(ax, low, high)
    axes[1].legend(loc="upper right", fontsize=6, markerscale=4)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(f"{track_name}: loudest {number(passage_seconds, 6, kind='g')} s, "
                 f"channel {channel}; red = samples at/beyond the bounds")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


# --------------------------------------------------------------------------------------------
# Output-mode comparison
# --------------------------------------------------------------------------------------------


def comparison_waveform(path: str | os.PathLike, passage: dict[str, Any]) -> None:
    """The input mixture, then each mode's estimate of one source, on one passage.

    ``passage``: what :func:`waveunet.compare.waveform_passage` measured: ``track``, ``source``,
    ``rate_hz``, ``start`` (sample), ``other_sources_energy_ratio``, ``mixture`` and
    ``reference`` (C, n) arrays, and ``rows`` (per mode: ``mode``, ``seed``, ``est`` and ``raw``
    channel-0 arrays, ``low``, ``high``, ``peak_ratio``, ``sdr_db``, ``clipped``).
    """
    rows, name = passage["rows"], passage["source"]
    mixture, reference = passage["mixture"], passage["reference"]
    # The input row and the y range: the widest bounds of any mode (a one-sided head has
    # none above).
    low = min(r["low"] for r in rows)
    highs = [r["high"] for r in rows if r["high"] is not None]
    high = max(highs) if highs else None
    top = high if high is not None else max(1.0, float(np.abs(mixture).max()))
    t = (passage["start"] + np.arange(mixture.shape[-1])) / passage["rate_hz"]

    plt = pyplot()
    fig, axes = plt.subplots(1 + len(rows), 1, figsize=(10, 1.9 * (1 + len(rows))), sharex=True,
                             sharey=True)
    x = mixture[0]
    ax = axes[0]
    ax.plot(t, x, lw=0.5, color="black")
    _mark(ax, t, x, bound_marks(x, None, low, high), 2)
    ratio = number(passage["other_sources_energy_ratio"], 1, kind="e")
    ax.set_title(f"input mixture ({passage['track']}, channel 0; other sources' energy "
                 f"{ratio} x {name}'s here)", fontsize=8)
    _bound_lines(ax, low, high)
    for ax, row in zip(axes[1:], rows, strict=True):
        ax.plot(t, reference[0], lw=0.5, color="0.75", label=f"true {name}")
        ax.plot(t, row["est"], lw=0.5, color="tab:blue", label="estimate")
        marks = bound_marks(row["est"], row["raw"], row["low"], row["high"])
        _mark(ax, t, row["est"], marks, 2, "clipped (at/beyond bound)")
        ax.set_title(f"{row['mode']} (seed {row['seed']}): {name}; peak ratio "
                     f"{number(row['peak_ratio'], 3)}, passage SDR {number(row['sdr_db'])} dB, "
                     f"{row['clipped']} samples at a bound (both channels)", fontsize=8)
        _bound_lines(ax, row["low"], row["high"])
    for ax in axes:
        ax.set_ylim(low * 1.1, top * 1.1)
    axes[1].legend(loc="upper right", fontsize=6, markerscale=3)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(f"Loud passage where only {name} plays: red = samples at or beyond the bound",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def training_curves(path: str | os.PathLike, runs: Sequence[dict[str, Any]]) -> None:
    """Training loss, validation MSE and validation SDR of every run (colour = mode).

    ``runs``: per run ``mode``, ``loss`` (its name), ``colour`` (index) and ``records`` (the
    run's ``metrics.jsonl`` lines).
    """
    sources: list[str] = []
    for run in runs:
        for rec in run["records"]:
            if rec.get("kind") == "valid":
                sources += [s for s in rec["sdr"] if s not in sources]

    plt = pyplot()
    n = 2 + len(sources)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4))
    seen = set()
    for run in runs:
        c, recs = f"C{run['colour']}", run["records"]
        label = run["mode"] if run["mode"] not in seen else None
        seen.add(run["mode"])
        train = [(x["step"], x["loss"]) for x in recs if x.get("kind") == "train"]
        if train:
            steps, loss = np.array(train).T
            k = max(1, len(loss) // 50)
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            axes[0].plot(steps[k - 1:], smooth, color=c, lw=0.8, alpha=0.8,
                         label=f"{label} ({run['loss']})" if label else None)
        valid = [x for x in recs if x.get("kind") == "valid"]
        if valid:
            steps = [x["step"] for x in valid]
            axes[1].plot(steps, [x["loss"] for x in valid], color=c, lw=0.8, marker=".",
                         label=label)
            for j, s in enumerate(sources):
                axes[2 + j].plot(steps, [x["sdr"].get(s, np.nan) for x in valid], color=c,
                                 lw=0.8, marker=".", label=label)
    axes[0].set_title("training loss (moving average)", fontsize=9)
    axes[0].set_yscale("log")
    axes[1].set_title("validation MSE (eval mode, test-time clip)", fontsize=9)
    axes[1].set_yscale("log")
    for j, s in enumerate(sources):
        axes[2 + j].set_title(f"validation SDR {s} (median frame, dB)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Training curves, one line per seed", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def sdr_by_mode(path: str | os.PathLike, summary: dict[str, Any], modes: Sequence[str],
                columns: Sequence[tuple[str, str]]) -> None:
    """Per source: each seed's SDR (dots) and the mean over seeds (bar), one panel per column.

    ``columns``: (key of ``summary["table"][source][mode]``, panel title).
    """
    sources = summary["sources"]
    plt = pyplot()
    width_inches = 5 + 1.6 * len(sources) * len(modes) / 2
    fig, axes = plt.subplots(1, len(columns), figsize=(width_inches, 3.6), sharey=True)
    width = 0.8 / len(modes)
    for ax, (key, title) in zip(axes, columns, strict=True):
        for i, mode in enumerate(modes):
            for j, s in enumerate(sources):
                entry = summary["table"][s][mode][key]
                x = j + (i - (len(modes) - 1) / 2) * width
                if entry["mean"] is not None:
                    ax.bar(x, entry["mean"], width * 0.9, color=f"C{i}", alpha=0.5,
                           label=mode if j == 0 else None)
                    vals = [v for v in entry["values"] if v is not None]
                    ax.scatter([x] * len(vals), vals, color=f"C{i}", s=10, zorder=3)
        ax.set_xticks(range(len(sources)), sources)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("SDR (dB)")
    axes[0].legend(fontsize=7)
    fig.suptitle("SDR per source: bars = mean over seeds, dots = seeds", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


# --------------------------------------------------------------------------------------------
# Saturation experiment
# --------------------------------------------------------------------------------------------

SATURATION_PANELS = (
    ("pre_activation_max_abs", "output conv max |a| (solid) / mean |a| (dashed)", True),
    ("hidden_max_abs", "largest |hidden activation|", True),
    ("first_layer_grad_norm", "gradient norm at the first conv's weights", True),
    ("loss", "training loss (each mode's own)", True),
    ("mse_to_target", "MSE to the target", True),
    ("output_mean", "mean output (target 1.0, then recovery target)", False),
)


def saturation_panels(path: str | os.PathLike, runs: Sequence[dict[str, Any]], title: str) -> None:
    """Six panels of per-step records, log scale where they span decades; dotted: recovery."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for i, run in enumerate(runs):
        rec = run["records"]
        steps = np.arange(1, len(rec["loss"]) + 1)
        for ax, (key, _, log) in zip(axes.flat, SATURATION_PANELS, strict=True):
            y = np.array(rec[key], dtype=np.float64)
            if log:
                # log axes: an exact 0 (clip, linear at 1.0) is a gap
                y = np.where(y > 0, y, np.nan)
            ax.plot(steps, y, color=f"C{i}", lw=1.0, label=run["mode"]["name"])
            if key == "pre_activation_max_abs":
                m = np.array(rec["pre_activation_mean_abs"], dtype=np.float64)
                ax.plot(steps, m, color=f"C{i}", lw=0.8, ls="--")
    for ax, (_key, name, log) in zip(axes.flat, SATURATION_PANELS, strict=True):
        ax.set_title(name, fontsize=9)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if runs and runs[0]["recovery_steps"]:
            ax.axvline(runs[0]["steps"] + 0.5, color="0.3", lw=0.8, ls=":")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
