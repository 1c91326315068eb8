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
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..files import atomic_write
from ..metrics import at_bounds, beyond_bounds
from .format import number, plural


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


# Drawing order of the waveform figures: the raw output, then the reference under the estimate
# (the estimate is what the figure is about), then the marks of samples at the bounds.
_Z_RAW, _Z_REFERENCE, _Z_ESTIMATE, _Z_MARKS = 1.0, 2.0, 3.0, 4.0


def _bound_lines(ax: Any, low: float, high: float | None) -> None:
    for b in (low, high):
        if b is not None:
            ax.axhline(b, color="red", lw=0.3, ls="--")


def _mark(ax: Any, t: np.ndarray, y: np.ndarray, marks: np.ndarray, size: float,
          label: str | None = None) -> None:
    """Red dots on the marked samples, above every line; none (and no legend entry) if none
    is marked."""
    if np.any(marks):
        ax.scatter(t[marks], y[marks], s=size, color="red", label=label, zorder=_Z_MARKS)


def _legend_entries(axes: Any) -> dict[str, Any]:
    """Each label drawn on any of ``axes`` once (marks may appear in some rows only)."""
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    return legend


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
    ax.set_title(f"SDR per source ({plural(n_tracks, 'track')})")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


@dataclass
class Passage:
    """What a passage figure shows: one track's (S, C, T) references and estimates (and the raw
    output before a test-time clip, if known), ``length`` samples from ``start``, one channel."""

    track_name: str
    source_names: Sequence[str]
    references: np.ndarray
    estimates: np.ndarray
    raw: np.ndarray | None
    sample_rate_hz: int
    start: int
    length: int
    channel: int = 0

    @classmethod
    def loudest(cls, track_name: str, source_names: Sequence[str], references: np.ndarray,
                estimates: np.ndarray, raw: np.ndarray | None, sample_rate_hz: int,
                seconds: float, channel: int = 0) -> Passage:
        """The track's loudest ``seconds`` (sum of the references), the passage every figure of
        one evaluation or validation shows."""
        length = min(max(1, int(seconds * sample_rate_hz)), references.shape[-1])
        return cls(track_name, source_names, references, estimates, raw, sample_rate_hz,
                   loudest_passage(references, length), length, channel)

    def name(self, s: int) -> str:
        return self.source_names[s] if s < len(self.source_names) else f"source {s}"

    def part(self, audio: np.ndarray | None, s: int) -> np.ndarray | None:
        """Source ``s`` of ``audio`` on the passage (zeros where ``audio`` is shorter)."""
        if audio is None:
            return None
        out = np.zeros(self.length, dtype=np.float64)
        piece = audio[s, self.channel, self.start:self.start + self.length]
        out[:piece.shape[-1]] = piece
        return out

    def where(self) -> str:
        return (f"{self.track_name}, {number(self.length / self.sample_rate_hz, 3, kind='g')} s "
                f"from {number(self.start / self.sample_rate_hz)} s, channel {self.channel}")


def waveform_figure(passage: Passage, bounds: tuple[float, float | None]) -> Any:
    """Per source, the estimate drawn over a lighter, thinner reference (same axes, same
    limits for all), the raw output before the test-time clip where known, and samples at or
    beyond the output bounds in red; the legend lists what is drawn."""
    plt = pyplot()
    low, high = bounds
    p = passage
    n_src = p.references.shape[0]
    t = (p.start + np.arange(p.length)) / p.sample_rate_hz
    fig, axes = plt.subplots(n_src, 1, figsize=(10, 1.2 + 2.2 * n_src), sharex=True,
                             sharey=True, squeeze=False, layout="constrained")
    peak = max(float(np.abs(x).max(initial=0.0)) for x in
               [p.part(a, s) for a in (p.references, p.estimates, p.raw) if a is not None
                for s in range(n_src)])
    top = max(peak, abs(low), high if high is not None else 0.0) * 1.08
    for s, ax in enumerate(axes[:, 0]):
        ref, est, raw = p.part(p.references, s), p.part(p.estimates, s), p.part(p.raw, s)
        if raw is not None:
            ax.plot(t, raw, lw=0.6, color="0.8", label="raw output (before the test-time clip)",
                    zorder=_Z_RAW)
            _mark(ax, t, raw, beyond_bounds(raw, low, high), 4, "raw output beyond a bound")
        ax.plot(t, ref, lw=0.5, color="0.45", label="reference", zorder=_Z_REFERENCE)
        ax.plot(t, est, lw=0.9, color="tab:orange", label="estimate", zorder=_Z_ESTIMATE)
        _mark(ax, t, est, at_bounds(est, low, high), 4, "estimate at/beyond a bound")
        _bound_lines(ax, low, high)
        ax.set_ylabel(p.name(s))
        ax.set_ylim(-top, top)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    legend = _legend_entries(axes[:, 0])
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=3, fontsize=9,
               markerscale=3, frameon=False)
    fig.suptitle(f"{p.where()}: loudest passage", fontsize=10)
    return fig


def librosa_missing() -> str | None:
    """Why spectrogram figures cannot be drawn here (librosa cannot be imported), or None.

    Asked only where a spectrogram is about to be drawn: nothing else needs librosa (the GPU
    machines this project trains on do not have it)."""
    try:
        import librosa  # noqa: F401
    except ImportError:
        return "librosa is not installed (pip install librosa): no spectrogram figures"
    return None


def spectrogram_figure(passage: Passage) -> Any:
    """Per source, the reference's and the estimate's spectrogram side by side on a
    log-frequency axis (``librosa.display.specshow``), in dB on one colour scale per source.

    librosa is imported here, not at module level: only drawing this figure needs it.
    """
    import librosa
    import librosa.display

    plt = pyplot()
    p = passage
    n_src = p.references.shape[0]
    n_fft = min(2048, 2 ** int(np.log2(max(p.length, 2))))
    hop = n_fft // 4
    fig, axes = plt.subplots(n_src, 2, figsize=(11, 0.8 + 2.4 * n_src), sharex=True,
                             sharey=True, squeeze=False, layout="constrained")
    image = None
    for s in range(n_src):
        pair = [p.part(a, s).astype(np.float32) for a in (p.references, p.estimates)]
        mags = [np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop, center=True)) for x in pair]
        ref_db = max(float(m.max()) for m in mags) or 1.0
        for col, (mag, what) in enumerate(zip(mags, ("reference", "estimate"), strict=True)):
            db = librosa.amplitude_to_db(mag, ref=ref_db, top_db=None)
            image = librosa.display.specshow(
                db, sr=p.sample_rate_hz, hop_length=hop, n_fft=n_fft, x_axis="time",
                y_axis="log", ax=axes[s, col], vmin=-80.0, vmax=0.0, cmap="magma")
            axes[s, col].set_title(f"{p.name(s)}: {what}", fontsize=9)
            axes[s, col].label_outer()
    fig.colorbar(image, ax=axes, format="%+.0f dB", shrink=0.8,
                 label="dB re the louder of reference and estimate")
    fig.suptitle(f"{p.where()}: time from the passage start", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# Output-mode comparison
# --------------------------------------------------------------------------------------------


def comparison_waveform(path: str | os.PathLike, passage: dict[str, Any]) -> None:
    """The input mixture, then each mode's estimate of one source, on one passage.

    ``passage``: what :func:`waveunet.experiments.compare.waveform_passage` measured: ``track``,
    ``source``, ``rate_hz``, ``start`` (sample), ``other_sources_energy_ratio``, ``mixture`` and
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
                     f"{plural(row['clipped'], 'sample')} at a bound (both channels)", fontsize=8)
        _bound_lines(ax, row["low"], row["high"])
    for ax in axes:
        ax.set_ylim(low * 1.1, top * 1.1)
    legend = _legend_entries(axes[1:])
    axes[1].legend(legend.values(), legend.keys(), loc="upper right", fontsize=9, markerscale=3,
                   framealpha=0.9)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(f"Loud passage where only {name} plays: red = samples at or beyond the bound",
                 fontsize=10)
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
    """:func:`sdr_by_mode_figure`, written to ``path``."""
    save_figure(sdr_by_mode_figure(summary, modes, columns), path, dpi=100)


def sdr_by_mode_figure(summary: dict[str, Any], modes: Sequence[str],
                       columns: Sequence[tuple[str, str]]) -> Any:
    """Per source, one panel per column (an SDR aggregation).

    Top row: each seed's SDR (dots) and the mean over seeds ± SD (bar), on an axis fitted to
    the values (not from 0: the differences between modes are what matters). Bottom row, with
    two or more modes: the paired difference of each mode to the first, seed by seed (same seed
    = same initialisation and examples), with its mean ± SD and the zero line.

    ``columns``: (key of ``summary["table"][source][mode]``, panel title).
    """
    sources = summary["sources"]
    paired = summary.get("paired_vs_first_mode") or {}
    rows = 2 if len(modes) > 1 and paired else 1
    plt = pyplot()
    width_inches = 4 + 1.2 * len(sources) * len(modes) * len(columns) / 2
    fig, axes = plt.subplots(rows, len(columns), figsize=(width_inches, 3.2 * rows + 0.6),
                             squeeze=False, layout="constrained")
    width = 0.8 / len(modes)

    def draw(ax: Any, x: float, entry: dict[str, Any], colour: str, label: str | None) -> None:
        values = [v for v in entry["values"] if v is not None]
        ax.scatter([x] * len(values), values, color=colour, s=14, zorder=3, label=label)
        if entry["mean"] is not None:
            ax.errorbar(x, entry["mean"], yerr=entry["std"] or 0.0, color=colour, capsize=4,
                        marker="_", markersize=14, lw=1.2, zorder=2)

    for col, (key, title) in enumerate(columns):
        ax = axes[0, col]
        for i, mode in enumerate(modes):
            for j, s in enumerate(sources):
                x = j + (i - (len(modes) - 1) / 2) * width
                label = mode if j == 0 and col == 0 else None
                draw(ax, x, summary["table"][s][mode][key], f"C{i}", label)
        ax.set_xticks(range(len(sources)), sources)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if rows == 2:
            ax = axes[1, col]
            others = modes[1:]
            for i, mode in enumerate(others, start=1):
                for j, s in enumerate(sources):
                    x = j + (i - 1 - (len(others) - 1) / 2) * (0.8 / len(others))
                    draw(ax, x, paired[s][mode][key], f"C{i}", None)
            ax.axhline(0.0, color="black", lw=0.8)
            ax.set_xticks(range(len(sources)), sources)
            ax.set_title(f"paired difference to {modes[0]}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("SDR (dB)")
    if rows == 2:
        axes[1, 0].set_ylabel("SDR difference (dB)")
    fig.legend(loc="outside lower center", ncol=len(modes), fontsize=9, frameon=False)
    fig.suptitle("SDR per source: dots = seeds, bar = mean ± SD over seeds", fontsize=10)
    return fig


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
