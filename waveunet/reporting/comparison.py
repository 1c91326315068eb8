"""The output-mode comparison's ``results.md``, rendered from what ``comparison.json`` holds.

:func:`results_markdown` takes the results dict of :mod:`waveunet.experiments.compare` (modes,
seeds, the settings that differ between runs, SDR and clipping statistics aggregated over seeds,
paired differences, every run's scores, the waveform passage) and writes prose, tables and figure
links. The column lists below say which statistics the comparison aggregates and shows.
"""

from __future__ import annotations

import json
from typing import Any

from .format import machine_text, number, plural, seed_spread, table

# SDR columns: (aggregation, statistic, title); the key in the results is sdr_<agg>_<stat>.
SDR_COLUMNS = (
    ("pooled_frames", "median", "SDR pooled frames median (papers')"),
    ("median_of_track_medians", "median", "SDR median of track medians (SiSEC)"),
    ("pooled_frames", "mean", "SDR pooled frames mean"),
)
# Clipping statistics shown side by side (keys of waveunet.metrics.clipping_stats), title, scale.
CLIPPING_COLUMNS = (
    ("fraction_clipped", "clipped %", 100.0),
    ("fraction_overshoot", "raw beyond bound %", 100.0),
    ("fraction_saturated", "saturated (\\|y\\| > 0.99) %", 100.0),
    ("peak_ratio", "peak ratio", 1.0),
    ("loud_gain_db", "loud-passage gain dB", 1.0),
)
# Per run and source in the "Every run" table: the evaluation's own numbers.
RUN_SCORES = ("sdr_pooled_frames_median", "sdr_median_of_track_medians_median",
              "fraction_clipped", "fraction_overshoot", "peak_ratio")


def sdr_key(aggregation: str, statistic: str) -> str:
    return f"sdr_{aggregation}_{statistic}"


def _per_mode_rows(result: dict[str, Any], cell) -> list[list[str]]:
    return [[s, m["name"], *cell(result["table"][s][m["name"]])]
            for s in result["sources"] for m in result["modes"]]


def sdr_table(result: dict[str, Any]) -> list[str]:
    return table(["source", "mode", *(t for _, _, t in SDR_COLUMNS)], _per_mode_rows(
        result, lambda e: [seed_spread(e[sdr_key(a, s)]) for a, s, _ in SDR_COLUMNS]))


def clipping_table(result: dict[str, Any]) -> list[str]:
    return table(["source", "mode", *(t for _, t, _ in CLIPPING_COLUMNS)], _per_mode_rows(
        result, lambda e: [seed_spread(e[k], 3, scale) for k, _, scale in CLIPPING_COLUMNS]))


def per_run_table(result: dict[str, Any]) -> list[str]:
    header = ["mode", "seed", "source", "SDR pooled median", "SDR SiSEC median", "clipped %",
              "raw beyond %", "peak ratio", "best epoch", "steps", "status", "train s"]
    rows = []
    for r in result["runs"]:
        if not r["evaluated"]:
            rows.append([r["mode"], r["seed"], *["-"] * 8, f"{r['status']} (not evaluated)", "-"])
            continue
        for s, v in r["scores"].items():
            rows.append([r["mode"], r["seed"], s, number(v["sdr_pooled_frames_median"]),
                         number(v["sdr_median_of_track_medians_median"]),
                         number(v["fraction_clipped"], 3, scale=100),
                         number(v["fraction_overshoot"], 3, scale=100),
                         number(v["peak_ratio"], 3), r["best_epoch"], r["global_step"],
                         r["status"], number(r["train_wall_s"], 0)])
    return table(header, rows)


def findings(result: dict[str, Any]) -> list[str]:
    """Plain sentences: each mode against the first, per source, with the seed spread."""
    lines = []
    base, modes = result["first_mode"], [m["name"] for m in result["modes"]]
    for s in result["sources"]:
        for m in modes[1:]:
            for agg, stat, title in SDR_COLUMNS[:2]:
                key = sdr_key(agg, stat)
                e = result["paired_vs_first_mode"][s][m][key]
                if e["mean"] is None:
                    continue
                a, b = result["table"][s][base][key], result["table"][s][m][key]
                if e["n"] > 1:
                    separated = b["min"] > a["max"] or b["max"] < a["min"]
                    consistent = e["min"] > 0 or e["max"] < 0
                    verdict = ("the seed ranges do not overlap" if separated else
                               "same sign on every seed, but the seed ranges overlap"
                               if consistent else
                               "the sign changes between seeds: not a difference at this scale")
                    spread_txt = (f"paired over {plural(e['n'], 'seed')}: "
                                  f"{number(e['mean'], sign=True)} ± {number(e['std'])} dB; "
                                  f"{verdict}")
                else:
                    spread_txt = "one seed: no spread to judge it against"
                word = "higher" if e["mean"] > 0 else "lower"
                lines.append(f"- **{s}**, {title}: {m} is {number(abs(e['mean']))} dB {word} "
                             f"than {base} ({seed_spread(b)} vs {seed_spread(a)} dB; "
                             f"{spread_txt}).")
        for m in modes:
            e = result["table"][s][m]
            parts = []
            if e["peak_ratio"]["mean"] is not None:
                parts.append(f"peaks at {number(e['peak_ratio']['mean'], 3)} of the reference's")
            gain = e["loud_gain_db"]["mean"]
            if gain is not None:
                parts.append(f"loud samples need {number(gain, sign=True)} dB of gain to match "
                             f"({'attenuated' if gain > 0 else 'too loud'})")
            if e["fraction_clipped"]["mean"] is not None:
                parts.append(f"{number(e['fraction_clipped']['mean'], 3, scale=100)}% of "
                             "samples at a bound")
            if e["fraction_overshoot"]["mean"] is not None:
                parts.append(f"{number(e['fraction_overshoot']['mean'], 3, scale=100)}% of raw "
                             "outputs beyond it")
            if parts:
                lines.append(f"- {s}, {m}: " + "; ".join(parts) + " (mean over seeds).")
    return lines


def _differences(result: dict[str, Any]) -> list[str]:
    """The settings in which the runs differ (besides seed and name), per mode."""
    modes, runs = result["modes"], result["runs"]
    diff = {k: v for k, v in result["config_differences"].items() if k not in ("seed", "name")}
    first_model, first_data = result["model"], result["data"]
    mode_text = "; ".join(
        f"**{x['name']}** = output `{x['output']}`, loss `{x['loss']}`"
        + (f", extra overrides {list(x['overrides'])}" if x["overrides"] else "") for x in modes)
    lines = ["## What differs between the runs", "",
             f"Modes: {mode_text}. Seeds: {result['seeds']}.", "",
             f"The resolved training configs of the {plural(len(runs), 'run')} have "
             f"{result['settings_count']} settings; they differ only in: "
             f"{', '.join(f'`{k}`' for k in diff) or 'nothing'} (plus `seed`, and `name`, the "
             f"run's label). Same model (`{first_model}`), data (`{first_data}`), optimiser, "
             "trainer and evaluation for all.", ""]
    if diff:
        lines += table(["setting", *(x["name"] for x in modes)], [
            [f"`{k}`", *(", ".join(sorted({json.dumps(v, default=str) for run, v in values.items()
                                           if run.startswith(x["name"] + "/")})) for x in modes)]
            for k, values in diff.items()])
        lines.append("")
    return lines


def _waveform(result: dict[str, Any]) -> list[str]:
    waveform, files = result["waveform"], result["files"]
    if not waveform:
        return ["## Figures", ""]
    lines = ["## Figures", "", f"![waveforms]({files['waveform']})", "",
             f"{files['waveform']}: track `{waveform['track']}`, "
             f"{number(waveform['seconds'], 1)} s from {number(waveform['start_seconds'])} s, "
             "where the other sources' energy is "
             f"{number(waveform['other_sources_energy_ratio'], 1, kind='e')} x "
             f"{waveform['source']}'s (the input *is* the {waveform['source']}); reference peak "
             f"{number(waveform['reference_peak'], 3)}.", ""]
    for row in waveform["rows"]:
        lines.append(f"- {row['mode']} (seed {row['seed']}): peak ratio "
                     f"{number(row['peak_ratio'], 3)}, passage SDR {number(row['sdr_db'])} dB, "
                     f"{plural(row['clipped'], 'sample')} at a bound, "
                     f"{plural(row['raw_beyond'], 'raw sample')} beyond it (both channels).")
    return lines + [""]


def results_markdown(result: dict[str, Any]) -> str:
    """``results.md`` of one comparison."""
    runs, m, files = result["runs"], result["machine"], result["files"]
    train_minutes = sum(r["train_wall_s"] or 0 for r in runs) / 60
    lines = [f"# Output-mode comparison: {', '.join(x['name'] for x in result['modes'])}", "",
             f"Command: `{result['command']}`", "",
             f"Written {result['written']}; wall time of this command "
             f"{number(result['wall_s'] / 60, 1)} min; training time summed over runs "
             f"{number(train_minutes, 1)} min ({sum(r['reused'] for r in runs)} of "
             f"{plural(len(runs), 'run')} reused from an earlier call).", "",
             f"Machine: {machine_text(m)}.", ""]
    lines += _differences(result)
    lines += ["## SDR per source (dB)", "",
              f"Test split `{result['eval']['split']}`, framewise SDR (museval's) in 1-s frames. "
              "Cells: mean ± sample SD over seeds [min, max]. *Pooled*: all frames of all tracks "
              "(Wave-U-Net papers); *SiSEC*: median over frames per track, then median over "
              "tracks.", ""]
    lines += sdr_table(result) + [""]
    lines += ["## Clipping statistics", "",
              "clipped: final estimate samples at or beyond a bound; raw beyond bound: output "
              "before the test-time clip outside [-1, 1] (linear heads); saturated: |y| > 0.99; "
              "peak ratio: max|estimate| / max|reference|; loud-passage gain: least-squares gain "
              "that matches the estimate to the reference on samples with |reference| >= 0.5 "
              "(> 0 dB: attenuated).", ""]
    lines += clipping_table(result) + [""]
    lines += ["## What the numbers say", ""] + findings(result) + [""]
    lines += _waveform(result)
    lines += [f"![training curves]({files['curves']})", "", f"![SDR by mode]({files['sdr']})", ""]
    lines += ["## Every run", ""] + per_run_table(result) + [""]
    lines += [f"Run folders: `runs/<mode>/seed<k>/` (config.yaml, best.pt, metrics.jsonl, "
              f"TensorBoard, eval/summary.json + report.md). All numbers: `{files['json']}`.", ""]
    return "\n".join(lines)
