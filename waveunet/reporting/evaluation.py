"""An evaluation's outputs: summary.json, report.md and figures, from per-track results.

``waveunet evaluate`` separates tracks, measures them with :mod:`waveunet.metrics`, and hands a
list of :class:`TrackResult` to :func:`write_report`. Files are written atomically and only under
fixed names; a directory already holding a report is written into only with ``overwrite=True``
(:func:`prepare_out_dir`, on the one guard of :mod:`waveunet.folders`). Numbers and tables go
through :mod:`.format`, figures through :mod:`.figures`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import space_checked
from ..files import atomic_write_text, dumps_json, safe_filename, to_jsonable
from ..folders import OVERWRITE_CLEARS, guard_out_dir
from ..metrics import ArrayLike, aggregate_pooled, aggregate_tracks
from . import figures
from .format import number, plural, table

GENERATOR = "waveunet.report"
SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.md"
BOXPLOT_NAME = "sdr_boxplot.png"
# The passage figures of one track: file name = prefix + the track's name (safe_filename) + .png
PASSAGE_FIGURES = ("waveform", "spectrogram")


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
    """Audio for the passage figures (waveform, spectrogram): one track's (S, C, T) arrays at
    ``sample_rate_hz``; the figures show its loudest ``passage_seconds``."""

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
        return np.array([d.get(k) if d.get(k) is not None else np.nan for d in per_track],
                        dtype=np.float64)

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
    metrics = ["SDR"] + [m for m in ("ISR", "SIR", "SAR")
                         if all(r.bss and m in r.bss for r in results)]
    aggregates: dict[str, Any] = {}
    for m in metrics:
        aggregates[m] = {}
        for s in sources:
            per_track = [r.frames(m)[list(r.source_names).index(s)]
                         for r in results if s in r.source_names]
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

# Report cells: small fractions in exponent form, so that they do not read as 0.
_cell = partial(number, tiny=True)


def _markdown(summary: dict[str, Any], files: dict[str, str]) -> str:
    lines = [f"<!-- generated by {GENERATOR} -->", "# Evaluation report", ""]
    meta = summary["meta"]
    if meta:
        lines += table(["setting", "value"],
                       [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()])
        lines.append("")
    lines += [f"{plural(len(summary['tracks']), 'track').capitalize()}. "
              f"{summary['aggregation_note']}", ""]
    replaced = meta.get("nonfinite_replaced")
    if replaced:
        lines += ["## Non-finite estimates replaced by 0", "",
                  "`nonfinite=zero`: these estimates held NaN or infinite samples, which were set "
                  "to 0 before scoring (the numbers below include them as silence).", ""]
        lines += table(["track", "source", "file", "non-finite samples", "first (channel, sample)"],
                       [(r["track"], r["source"], r.get("file") or "-", r["count"],
                         f"({r['first_channel']}, {r['first_sample']})") for r in replaced])
        lines.append("")
    for m in summary["metrics"]:
        lines += [f"## {m} (dB)", ""]
        lines += table(
            ["source", "pooled median", "pooled MAD", "pooled mean", "pooled SD", "frames",
             "median of track medians", "mean of track medians", "tracks"],
            [(s, _cell(p["median"]), _cell(p["mad"]), _cell(p["mean"]), _cell(p["std"]),
              p["n_frames"], _cell(t["median"]), _cell(t["mean"]), t["n_tracks"])
             for s, agg in summary["aggregates"][m].items()
             for p, t in [(agg["pooled_frames"], agg["median_of_track_medians"])]])
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
        ]
        lines += table(
            ["source", "clipped", "beyond bound (raw)", "overshoot mean", "overshoot max",
             "saturated", "peak ratio (dB)", "RMS ratio (dB)", "loud gain", "loud gain (dB)"],
            [(s, _cell(c.get("fraction_clipped"), 4), _cell(c.get("fraction_overshoot"), 4),
              _cell(c.get("overshoot_mean"), 3), _cell(c.get("overshoot_max"), 3),
              _cell(c.get("fraction_saturated"), 4), _cell(c.get("peak_ratio_db")),
              _cell(c.get("rms_ratio_db")), _cell(c.get("loud_gain"), 3),
              _cell(c.get("loud_gain_db")))
             for s, c in summary["clipping"].items() if c])
        lines.append("")
    diffs = [(t["name"], t["difference"]) for t in summary["tracks"] if t.get("difference")]
    if diffs:
        lines += [
            "## Difference source: error from the predicted sources' gain",
            "",
            "Share of the difference source's error energy removed by a least-squares gain per "
            "predicted source (see `waveunet.metrics.difference_error_share`).",
            "",
        ]
        lines += table(
            ["track", "explained share", "SDR (dB)", "SDR after gain correction (dB)", "gains"],
            [(name, _cell(d.get("explained_share"), 3), _cell(d.get("sdr_db")),
              _cell(d.get("sdr_gain_corrected_db")),
              ", ".join(_cell(g, 3) for g in d.get("gains", [])))
             for name, d in diffs])
        lines.append("")
    sources = summary["sources"]
    lines += ["## Per-track median SDR (dB)", ""]
    lines += table(["track", *sources],
                   [(t["name"], *(_cell(t["metrics"]["SDR"][s]["median"])
                                  if s in t["metrics"]["SDR"] else "-" for s in sources))
                    for t in summary["tracks"]])
    lines.append("")
    if "sdr_boxplot" not in files:
        return "\n".join([*lines, "No figures were drawn (figures=false).", ""])
    lines += ["## Figures", "", f"![SDR box plot](<{files['sdr_boxplot']}>)", ""]  # <>: spaces
    passage = [role for role in PASSAGE_FIGURES if role in files]
    if passage:
        where = summary.get("passage") or {}
        seconds = number(where.get("seconds"), 3, kind="g")
        lines += [f"Track `{where.get('track')}`, its loudest {seconds} s from "
                  f"{number(where.get('start_seconds'))} s, channel {where.get('channel')}: "
                  "the estimate over the reference (samples at or beyond the output bounds in "
                  "red), and their spectrograms side by side.", ""]
        lines += [" ".join(f"![{role}](<{files[role]}>)" for role in passage), ""]
    if meta.get("spectrogram_skipped"):
        lines += [f"No spectrogram figure: {meta['spectrogram_skipped']}.", ""]
    return "\n".join(lines)


def terminal_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: SDR both ways per source, and where the report is."""
    meta = summary["meta"]
    lines = [f"{plural(meta['tracks'], 'track')} of {meta['data']}/{meta['split']}, scored at "
             f"{meta['scored_rate']}"]
    for m in summary["metrics"]:
        for src, agg in summary["aggregates"][m].items():
            p, t = agg["pooled_frames"], agg["median_of_track_medians"]
            lines.append(f"  {m} {src:>14}: pooled frames median {number(p['median'])} dB "
                         f"(mean {number(p['mean'])}); median of track medians "
                         f"{number(t['median'])} dB")
    lines.append(f"report: {Path(meta['out_dir']) / REPORT_NAME}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _is_figure(name: str) -> bool:
    return name == BOXPLOT_NAME or (
        name.endswith(".png") and any(name.startswith(f"{p}_") for p in PASSAGE_FIGURES))


def prepare_out_dir(out_dir: str | os.PathLike[str], overwrite: bool, *,
                    subdirs: Sequence[str] = ()) -> None:
    """The output-directory guard (:func:`waveunet.folders.guard_out_dir`, policy
    :data:`~waveunet.folders.OVERWRITE_CLEARS`); call it before any work is done.

    Refuses (:class:`FileExistsError`) to write into a directory that already holds a report
    (summary.json, report.md, figures) or a non-empty ``subdirs`` entry (e.g. ``museval``),
    unless ``overwrite``. With ``overwrite`` the stale files an earlier run wrote and this one
    may not rewrite (``waveform_*.png`` of another track, ``<subdir>/*.json`` of other tracks)
    are removed; other files are left alone.
    """
    out = Path(out_dir)

    def ours(folder: Path) -> list[str]:
        return sorted({p.name for p in folder.iterdir() if p.is_file() and (
            p.name in (SUMMARY_NAME, REPORT_NAME) or _is_figure(p.name))}
            | {d for d in subdirs if any((folder / d).glob("*.json"))})

    present = guard_out_dir(out, ours, OVERWRITE_CLEARS, allowed=overwrite,
                            what="an evaluation", setting="out_dir=...")
    for name in present:  # summary.json and report.md are rewritten in place
        if name in subdirs:
            for stale in (out / name).glob("*.json"):
                stale.unlink()
        elif _is_figure(name):
            (out / name).unlink()


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def write_report(
    out_dir: str | os.PathLike[str],
    results: Sequence[TrackResult],
    *,
    meta: dict[str, Any] | None = None,
    waveform: WaveformSpec | None = None,
    overwrite: bool = False,
    checked: bool = False,
    draw: bool = True,
) -> dict[str, Any]:
    """Write summary.json, report.md, sdr_boxplot.png and (optionally) the passage figures
    waveform_<track>.png and spectrogram_<track>.png (the latter needs librosa; without it the
    summary's meta says it was skipped).

    Args:
        out_dir: output directory (created if missing).
        results: one :class:`TrackResult` per track.
        meta: run metadata copied into the summary (checkpoint, output mode, sample rate, ...).
        waveform: audio for the passage figures (the loudest passage of one track).
        overwrite: write into a directory that already holds a report (stale figures of an
            earlier one are removed); see :func:`prepare_out_dir`.
        checked: the caller already ran :func:`prepare_out_dir` before its work (``overwrite``
            is then not used).
        draw: False: no figures (``figures=false``), summary.json and report.md only.

    Returns:
        The summary dict as written to summary.json (``files`` maps role -> file name).

    Raises:
        FileExistsError: ``out_dir`` already holds a report (and not overwrite).
        DiskFullError: no space for a file (it names it); the files written before it stay.
    """
    out = Path(out_dir)
    summary = build_summary(results, meta or {})
    if not checked:
        prepare_out_dir(out, overwrite)
    with space_checked(out):
        out.mkdir(parents=True, exist_ok=True)
    files = {"summary": SUMMARY_NAME, "report": REPORT_NAME}
    if draw:
        _draw(out, summary, files, results, waveform)
    summary["files"] = files
    with space_checked(out / REPORT_NAME):
        atomic_write_text(out / REPORT_NAME, _markdown(summary, files))
    # summary last: its file list marks the others as ours only once they all exist.
    with space_checked(out / SUMMARY_NAME):
        atomic_write_text(out / SUMMARY_NAME, dumps_json(summary))
    return summary


def _draw(out: Path, summary: dict[str, Any], files: dict[str, str],
          results: Sequence[TrackResult], waveform: WaveformSpec | None) -> None:
    """The SDR box plot and the passage figures, into ``out``; ``files`` gets their names."""
    files["sdr_boxplot"] = BOXPLOT_NAME
    sources = summary["sources"]
    frames = [np.concatenate([r.frames("SDR")[list(r.source_names).index(s)]
                              for r in results if s in r.source_names]) for s in sources]
    with space_checked(out / BOXPLOT_NAME):
        figures.sdr_boxplot(out / BOXPLOT_NAME, sources, frames, len(results))
    if waveform is not None:
        names = next((r.source_names for r in results if r.name == waveform.track_name),
                     results[0].source_names)
        passage = figures.Passage.loudest(
            waveform.track_name, names, _np(waveform.references), _np(waveform.estimates),
            None if waveform.raw is None else _np(waveform.raw), waveform.sample_rate_hz,
            waveform.passage_seconds, waveform.channel)
        summary["passage"] = {"track": passage.track_name, "channel": passage.channel,
                              "start_seconds": passage.start / passage.sample_rate_hz,
                              "seconds": passage.length / passage.sample_rate_hz}
        stem = safe_filename(waveform.track_name)
        files["waveform"] = f"waveform_{stem}.png"
        with space_checked(out / files["waveform"]):
            figures.save_figure(figures.waveform_figure(passage, waveform.bounds),
                                out / files["waveform"])
        missing = figures.librosa_missing()
        if missing is None:
            files["spectrogram"] = f"spectrogram_{stem}.png"
            with space_checked(out / files["spectrogram"]):
                figures.save_figure(figures.spectrogram_figure(passage),
                                    out / files["spectrogram"])
        else:
            summary["meta"]["spectrogram_skipped"] = missing
