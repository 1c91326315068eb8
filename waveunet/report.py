"""Evaluation outputs: summary.json, report.md and figures, from per-track results.

The evaluation command separates tracks, measures them with :mod:`waveunet.metrics`, and hands
a list of :class:`TrackResult` to :func:`write_report`. Files are written atomically (temp file
+ ``os.replace``) and only under fixed names; a directory already holding a report is written
into only with ``overwrite=True`` (:func:`prepare_out_dir`, the one guard).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from waveunet.files import atomic_write, atomic_write_text
from waveunet.metrics import (
    ArrayLike,
    aggregate_pooled,
    aggregate_tracks,
    dumps_json,
    safe_filename,
    to_jsonable,
)

GENERATOR = "waveunet.report"
SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.md"
BOXPLOT_NAME = "sdr_boxplot.png"


@dataclass
class TrackResult:
    """Everything measured on one track.

    Attributes:
        name: track name.
        source_names: sources in the order of the first axis of the arrays.
        sdr_frames: (S, F) framewise SDR in dB (:func:`waveunet.metrics.framewise_sdr`).
        clipping: {source name: :func:`waveunet.metrics.clipping_stats` dict}.
        bss: optional {"SDR"|"ISR"|"SIR"|"SAR": (S, F)} from :func:`waveunet.metrics.bss_eval`.
        difference: optional :func:`waveunet.metrics.difference_error_share` dict.
    """

    name: str
    source_names: Sequence[str]
    sdr_frames: ArrayLike
    clipping: dict[str, dict[str, Any]] = field(default_factory=dict)
    bss: dict[str, ArrayLike] | None = None
    difference: dict[str, Any] | None = None

    def frames(self, metric: str = "SDR") -> np.ndarray:
        """(S, F) float64 frames of a metric; SDR comes from ``sdr_frames``."""
        src: Any = self.sdr_frames if metric == "SDR" else (self.bss or {}).get(metric)
        if src is None:
            raise KeyError(f"track {self.name!r}: no {metric} frames")
        arr = src.detach().cpu().numpy() if hasattr(src, "detach") else np.asarray(src)
        arr = arr.astype(np.float64)
        if arr.ndim != 2 or arr.shape[0] != len(self.source_names):
            raise ValueError(
                f"track {self.name!r}: {metric} frames have shape {arr.shape}, expected "
                f"({len(self.source_names)}, frames)"
            )
        return arr


@dataclass
class WaveformSpec:
    """Audio for the waveform figure: one track's (S, C, T) arrays at ``sample_rate_hz``."""

    track_name: str
    references: ArrayLike
    estimates: ArrayLike
    sample_rate_hz: int
    raw: ArrayLike | None = None
    passage_seconds: float = 2.0
    bounds: tuple[float, float] = (-1.0, 1.0)
    channel: int = 0


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------

# How each clipping statistic is combined over tracks: fractions weighted by sample count,
# counts summed, maxima by max, overshoot_mean weighted by each track's overshoot count,
# ``*_db`` from the aggregated ratio, everything else by the median over tracks.
def _aggregate_clipping(per_track: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not per_track:
        return out
    weights = np.array([d.get("n_samples", 1) for d in per_track], dtype=np.float64)
    # every numeric key of any track: the first track's may be None (e.g. no loud passage)
    keys = list(dict.fromkeys(
        k for d in per_track for k, v in d.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "n_samples"
    ))

    def values(k: str) -> np.ndarray:
        return np.array([d.get(k) if d.get(k) is not None else np.nan for d in per_track], dtype=np.float64)

    for k in keys:
        if k.endswith("_db") and k[:-3] in keys:
            continue  # from the aggregated ratio below
        vals = values(k)
        ok = np.isfinite(vals)
        if not ok.any():
            out[k] = None
        elif k.startswith("fraction_"):
            out[k] = float(np.sum(vals[ok] * weights[ok]) / np.sum(weights[ok]))
        elif k.endswith("_count"):
            out[k] = int(vals[ok].sum())
        elif k.endswith("_max"):
            out[k] = float(vals[ok].max())
        elif k == "overshoot_mean" and "overshoot_count" in keys:
            counts = np.nan_to_num(values("overshoot_count"))
            w = ok & (counts > 0)
            out[k] = float(np.sum(vals[w] * counts[w]) / np.sum(counts[w])) if w.any() else None
        else:
            out[k] = float(np.median(vals[ok]))
    for k in keys:
        if k.endswith("_db") and k[:-3] in keys:
            ratio = out.get(k[:-3])
            ok = ratio is not None and math.isfinite(ratio) and ratio > 0
            out[k] = 20.0 * math.log10(ratio) if ok else None
    out["n_samples"] = int(weights.sum())
    out["n_tracks"] = len(per_track)
    return out


def _source_order(results: Sequence[TrackResult]) -> list[str]:
    order: list[str] = []
    for r in results:
        for s in r.source_names:
            if s not in order:
                order.append(s)
    return order


def build_summary(results: Sequence[TrackResult], meta: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable summary (plain JSON types; NaN/inf as None)."""
    if not results:
        raise ValueError("results: no tracks to report")
    sources = _source_order(results)
    metrics = ["SDR"] + [m for m in ("ISR", "SIR", "SAR") if all(r.bss and m in r.bss for r in results)]
    aggregates: dict[str, Any] = {}
    for m in metrics:
        aggregates[m] = {}
        for s in sources:
            per_track = [r.frames(m)[list(r.source_names).index(s)] for r in results if s in r.source_names]
            aggregates[m][s] = {
                "pooled_frames": aggregate_pooled(per_track),
                "median_of_track_medians": aggregate_tracks(per_track),
            }
    clipping = {
        s: _aggregate_clipping([r.clipping[s] for r in results if s in r.clipping]) for s in sources
    }
    # per-track medians: aggregate_tracks' own (track_medians follow the tracks having the source)
    medians: dict[tuple[str, str], list[float | None]] = {
        (m, s): list(aggregates[m][s]["median_of_track_medians"]["track_medians"])
        for m in metrics for s in sources
    }
    tracks = []
    for r in results:
        entry: dict[str, Any] = {"name": r.name, "sources": list(r.source_names), "metrics": {}}
        for m in metrics:
            fr = r.frames(m)
            entry["metrics"][m] = {
                s: {"frames": fr[i], "median": medians[(m, s)].pop(0)}
                for i, s in enumerate(r.source_names)
            }
        entry["clipping"] = r.clipping
        if r.difference is not None:
            entry["difference"] = r.difference
        tracks.append(entry)
    return to_jsonable(
        {
            "generator": GENERATOR,
            "meta": meta,
            "sources": sources,
            "metrics": metrics,
            "aggregation_note": (
                "pooled_frames: all 1-s frames of all tracks pooled (Wave-U-Net papers); "
                "median_of_track_medians: median over frames per track, then over tracks "
                "(SiSEC, Open-Unmix, Demucs). NaN (silent) and +inf (perfect) frames are dropped."
            ),
            "aggregates": aggregates,
            "clipping": clipping,
            "tracks": tracks,
        }
    )


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def _markdown(summary: dict[str, Any], files: dict[str, str]) -> str:
    lines = [f"<!-- generated by {GENERATOR} -->", "# Evaluation report", ""]
    meta = summary["meta"]
    if meta:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {k} | {json.dumps(v) if not isinstance(v, str) else v} |" for k, v in meta.items()]
        lines.append("")
    lines += [f"Tracks: {len(summary['tracks'])}. {summary['aggregation_note']}", ""]
    for m in summary["metrics"]:
        lines += [
            f"## {m} (dB)",
            "",
            "| source | pooled median | pooled MAD | pooled mean | pooled SD | frames "
            "| median of track medians | mean of track medians | tracks |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s, agg in summary["aggregates"][m].items():
            p, t = agg["pooled_frames"], agg["median_of_track_medians"]
            lines.append(
                f"| {s} | {_fmt(p['median'])} | {_fmt(p['mad'])} | {_fmt(p['mean'])} "
                f"| {_fmt(p['std'])} | {p['n_frames']} | {_fmt(t['median'])} | {_fmt(t['mean'])} "
                f"| {t['n_tracks']} |"
            )
        lines.append("")
    if any(summary["clipping"].values()):
        lines += [
            "## Clipping",
            "",
            "Fractions are of all samples (both channels) over all tracks; overshoot is how far "
            "the raw output went beyond the bound before the test-time clip (mean: over all such "
            "samples of all tracks; max: over all tracks); ratios and the loud-passage gain are "
            "medians over tracks, their dB values those of the medians. Loud gain g > 1 "
            "means loud passages of the estimate are attenuated.",
            "",
            "| source | clipped | beyond bound (raw) | overshoot mean | overshoot max | saturated "
            "| peak ratio (dB) | RMS ratio (dB) | loud gain | loud gain (dB) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s, c in summary["clipping"].items():
            if not c:
                continue
            lines.append(
                f"| {s} | {_fmt(c.get('fraction_clipped'), 4)} | {_fmt(c.get('fraction_overshoot'), 4)} "
                f"| {_fmt(c.get('overshoot_mean'), 3)} | {_fmt(c.get('overshoot_max'), 3)} "
                f"| {_fmt(c.get('fraction_saturated'), 4)} | {_fmt(c.get('peak_ratio_db'))} "
                f"| {_fmt(c.get('rms_ratio_db'))} | {_fmt(c.get('loud_gain'), 3)} "
                f"| {_fmt(c.get('loud_gain_db'))} |"
            )
        lines.append("")
    diffs = [(t["name"], t["difference"]) for t in summary["tracks"] if t.get("difference")]
    if diffs:
        lines += [
            "## Difference source: error from the predicted sources' gain",
            "",
            "Share of the difference source's error energy removed by a least-squares gain per "
            "predicted source (see `waveunet.metrics.difference_error_share`).",
            "",
            "| track | explained share | SDR (dB) | SDR after gain correction (dB) | gains |",
            "|---|---|---|---|---|",
        ]
        for name, d in diffs:
            gains = ", ".join(_fmt(g, 3) for g in d.get("gains", []))
            lines.append(
                f"| {name} | {_fmt(d.get('explained_share'), 3)} | {_fmt(d.get('sdr_db'))} "
                f"| {_fmt(d.get('sdr_gain_corrected_db'))} | {gains} |"
            )
        lines.append("")
    sources = summary["sources"]
    lines += [
        "## Per-track median SDR (dB)",
        "",
        "| track | " + " | ".join(sources) + " |",
        "|---|" + "---|" * len(sources),
    ]
    for t in summary["tracks"]:
        sdr = t["metrics"]["SDR"]
        lines.append(
            f"| {t['name']} | " + " | ".join(_fmt(sdr[s]["median"]) if s in sdr else "-" for s in sources) + " |"
        )
    lines.append("")
    figs = [f for k, f in files.items() if f.endswith(".png")]
    if figs:
        lines += ["## Figures", ""] + [f"![{f}](<{f}>)" for f in figs] + [""]  # <> allows spaces
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


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


def _boxplot(summary: dict[str, Any], results: Sequence[TrackResult]) -> Callable[[str], None]:
    def draw(path: str) -> None:
        plt = pyplot()
        sources = summary["sources"]
        data = []
        for s in sources:
            vals = np.concatenate(
                [r.frames("SDR")[list(r.source_names).index(s)] for r in results if s in r.source_names]
            )
            data.append(vals[np.isfinite(vals)])
        fig, ax = plt.subplots(figsize=(1.6 * len(sources) + 2, 4))
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(sources) + 1), sources)
        ax.set_ylabel("SDR (dB), 1-s frames pooled over tracks")
        ax.set_title(f"SDR per source ({len(results)} tracks)")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
        plt.close(fig)

    return draw


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def loudest_passage(references: np.ndarray, length: int) -> int:
    """Start sample of the ``length``-sample window with the most energy in the sum of references."""
    mix = references.sum(axis=0)
    energy = np.square(mix).sum(axis=0)
    if length >= energy.size:
        return 0
    c = np.concatenate([[0.0], np.cumsum(energy)])
    return int(np.argmax(c[length:] - c[:-length]))


def _waveform(spec: WaveformSpec, source_names: Sequence[str]) -> Callable[[str], None]:
    def draw(path: str) -> None:
        plt = pyplot()
        ref, est = _np(spec.references), _np(spec.estimates)
        raw = None if spec.raw is None else _np(spec.raw)
        low, high = spec.bounds
        n = max(1, int(spec.passage_seconds * spec.sample_rate_hz))
        start = loudest_passage(ref, n)
        sl = slice(start, min(start + n, ref.shape[-1]))
        t = np.arange(sl.start, sl.stop) / spec.sample_rate_hz
        n_src = ref.shape[0]
        fig, axes = plt.subplots(2 * n_src, 1, figsize=(10, 2.0 * 2 * n_src), sharex=True)
        axes = np.atleast_1d(axes)
        for s in range(n_src):
            name = source_names[s] if s < len(source_names) else f"source {s}"
            r = ref[s, spec.channel, sl]
            e = est[s, spec.channel, sl] if est.shape[-1] >= sl.stop else np.zeros_like(r)
            ax_r, ax_e = axes[2 * s], axes[2 * s + 1]
            ax_r.plot(t, r, lw=0.5, color="tab:blue")
            ax_r.set_ylabel(f"{name}\nreference", fontsize=8)
            if raw is not None and raw.shape[-1] >= sl.stop:
                w = raw[s, spec.channel, sl]
                ax_e.plot(t, w, lw=0.4, color="0.7", label="raw output")
                out = (w < low) | (w > high)
                ax_e.scatter(t[out], w[out], s=1, color="red", label="raw beyond bound")
            ax_e.plot(t, e, lw=0.5, color="tab:green", label="estimate")
            hit = (e <= low) | (e >= high)
            ax_e.scatter(t[hit], e[hit], s=1, color="red", label="at/beyond bound")
            ax_e.set_ylabel(f"{name}\nestimate", fontsize=8)
            for ax in (ax_r, ax_e):
                ax.axhline(low, color="red", lw=0.3, ls="--")
                ax.axhline(high, color="red", lw=0.3, ls="--")
        axes[1].legend(loc="upper right", fontsize=6, markerscale=4)
        axes[-1].set_xlabel("time (s)")
        fig.suptitle(
            f"{spec.track_name}: loudest {spec.passage_seconds:g} s, channel {spec.channel}; "
            "red = samples at/beyond the bounds"
        )
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
        plt.close(fig)

    return draw


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _is_figure(name: str) -> bool:
    return name == BOXPLOT_NAME or (name.startswith("waveform_") and name.endswith(".png"))


def prepare_out_dir(out_dir: str | os.PathLike[str], overwrite: bool, *, subdirs: Sequence[str] = ()) -> None:
    """The output-directory guard; call it before any work is done.

    Refuses (:class:`FileExistsError`) to write into a directory that already holds a report
    (summary.json, report.md, figures) or a non-empty ``subdirs`` entry (e.g. ``museval``),
    unless ``overwrite``. With ``overwrite`` the stale files an earlier run wrote and this one
    may not rewrite (``waveform_*.png`` of another track, ``<subdir>/*.json`` of other tracks)
    are removed; other files are left alone.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if not out.is_dir():
        return
    ours = [p for p in out.iterdir() if p.is_file() and (p.name in (SUMMARY_NAME, REPORT_NAME) or _is_figure(p.name))]
    stale_json = [f for d in subdirs if (out / d).is_dir() for f in (out / d).glob("*.json")]
    if not overwrite:
        existing = sorted({p.name for p in ours} | {d for d in subdirs if any((out / d).glob("*.json"))})
        if existing:
            raise FileExistsError(
                f"{out} already holds an evaluation ({', '.join(existing)}); choose another "
                "out_dir=... or set overwrite=true"
            )
        return
    for p in [p for p in ours if _is_figure(p.name)] + stale_json:
        p.unlink()  # summary.json and report.md are rewritten in place


def write_report(
    out_dir: str | os.PathLike[str],
    results: Sequence[TrackResult],
    *,
    meta: dict[str, Any] | None = None,
    waveform: WaveformSpec | None = None,
    overwrite: bool = False,
    checked: bool = False,
) -> dict[str, Any]:
    """Write summary.json, report.md, sdr_boxplot.png and (optionally) waveform_<track>.png.

    Args:
        out_dir: output directory (created if missing).
        results: one :class:`TrackResult` per track.
        meta: run metadata copied into the summary (checkpoint, output mode, sample rate, ...).
        waveform: audio for the waveform figure (loudest passage of one track).
        overwrite: write into a directory that already holds a report (stale figures of an
            earlier one are removed); see :func:`prepare_out_dir`.
        checked: the caller already ran :func:`prepare_out_dir` before its work (``overwrite``
            is then not used).

    Returns:
        The summary dict as written to summary.json (``files`` maps role -> file name).

    Raises:
        FileExistsError: ``out_dir`` already holds a report (and not overwrite).
    """
    out = os.fspath(out_dir)
    summary = build_summary(results, meta or {})
    if not checked:
        prepare_out_dir(out, overwrite)
    os.makedirs(out, exist_ok=True)
    files = {"summary": SUMMARY_NAME, "report": REPORT_NAME, "sdr_boxplot": BOXPLOT_NAME}
    if waveform is not None:
        files["waveform"] = f"waveform_{safe_filename(waveform.track_name)}.png"
    summary["files"] = files
    atomic_write(os.path.join(out, BOXPLOT_NAME), _boxplot(summary, results))
    if waveform is not None:
        names = next((r.source_names for r in results if r.name == waveform.track_name), results[0].source_names)
        atomic_write(os.path.join(out, files["waveform"]), _waveform(waveform, names))
    atomic_write_text(os.path.join(out, REPORT_NAME), _markdown(summary, files))
    # summary last: its file list marks the others as ours only once they all exist.
    atomic_write_text(os.path.join(out, SUMMARY_NAME), dumps_json(summary))
    return summary


__all__ = [
    "TrackResult",
    "WaveformSpec",
    "build_summary",
    "loudest_passage",
    "prepare_out_dir",
    "write_report",
]
