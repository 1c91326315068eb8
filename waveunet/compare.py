"""``waveunet compare [hydra overrides]``: output modes side by side, trained identically.

Examples::

    waveunet compare experiment=compare_quick                 # make compare (~20 min, 2-core CPU)
    waveunet compare experiment=compare_paper data.root=/data/musdb18
    waveunet compare experiment=compare_quick compare.seeds=[0] \\
        'compare.modes=[{name:tanh,output:tanh_difference},{name:tanh_ce,output:tanh_difference,loss:cross_entropy},{name:clip,output:clip_direct}]'
    waveunet compare experiment=saturation                    # see waveunet/saturation.py

Data flow: ``configs/compare.yaml`` (the ``train`` config + a ``compare`` block) -> one training
config per (mode, seed), composed from the *same* overrides plus only ``output=<mode>``,
``loss.name=<loss>``, ``seed=<k>`` -> :class:`waveunet.solver.Solver` in
``<out_dir>/runs/<mode>/seed<k>/`` -> :func:`waveunet.evaluate.evaluate` of its best checkpoint on
the same test split -> ``results.md``, ``comparison.json`` and figures in ``<out_dir>``.

A run folder with a ``train_summary.json`` is finished and reused, one with a ``last.pt`` is
resumed, and an evaluation with a ``summary.json`` is reused: an interrupted compare continues
where it stopped. A run folder trained with other settings is refused, not mixed in.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .config import compose, config_dir
from .errors import ConfigError
from .files import atomic_write_text
from .metrics import bound_hits, dumps_json, framewise_sdr
from .report import pyplot, save_figure

log = logging.getLogger("waveunet.compare")

GENERATOR = "waveunet.compare"
RESULTS_NAME = "results.md"
JSON_NAME = "comparison.json"
WAVEFORM_NAME = "waveform_comparison.png"
CURVES_NAME = "training_curves.png"
SDR_FIGURE_NAME = "sdr_by_mode.png"
RUN_CONFIG = "config.yaml"
RUN_SUMMARY = "train_summary.json"
EVAL_DIR = "eval"
EVAL_SETTINGS = "eval_settings.json"  # what eval/summary.json was computed with
# Set per run by the comparison itself; a command-line override of them would be overwritten.
PER_RUN_KEYS = ("output", "seed", "loss", "loss.name", "name")
# Clipping statistics shown side by side (keys of waveunet.metrics.clipping_stats).
CLIPPING_COLUMNS = (
    ("fraction_clipped", "clipped %", 100.0),
    ("fraction_overshoot", "raw beyond bound %", 100.0),
    ("fraction_saturated", "saturated (\\|y\\| > 0.99) %", 100.0),
    ("peak_ratio", "peak ratio", 1.0),
    ("loud_gain_db", "loud-passage gain dB", 1.0),
)
SDR_COLUMNS = (
    ("pooled_frames", "median", "SDR pooled frames median (papers')"),
    ("median_of_track_medians", "median", "SDR median of track medians (SiSEC)"),
    ("pooled_frames", "mean", "SDR pooled frames mean"),
)

HELP = f"""usage: waveunet compare [hydra overrides]

Train every output mode of compare.modes once per seed in compare.seeds, with identical
settings except the output head / loss, evaluate each on the same test split, and write
results.md, comparison.json and figures to compare.out_dir. Re-running continues an
interrupted comparison. experiment=saturation runs the saturation experiment instead.

  waveunet compare experiment=compare_quick
  waveunet compare experiment=compare_paper data.root=/data/musdb18
  waveunet compare experiment=saturation

Settings (configs/compare.yaml, on top of configs/train.yaml):
{(config_dir() / "compare.yaml").read_text() if (config_dir() / "compare.yaml").is_file() else ""}"""


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """One compared configuration: an output preset, a loss, and (rarely) extra overrides."""

    name: str
    output: str
    loss: str
    overrides: tuple[str, ...] = ()

    def run_overrides(self, seed: int) -> list[str]:
        return [f"output={self.output}", f"loss.name={self.loss}", f"seed={seed}",
                f"name={self.name}", *self.overrides]


@dataclass
class Settings:
    modes: list[Mode]
    seeds: list[int]
    out_dir: Path
    eval: dict[str, Any]
    figure: dict[str, Any]
    progress: bool = True
    threads: int | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Settings:
        c = cfg.get("compare")
        if c is None:
            raise ConfigError("compare: missing (compose configs/compare.yaml)")
        default_loss = str(OmegaConf.select(cfg, "loss.name", default="mse"))
        entries = c.get("modes")
        if not entries:
            raise ConfigError("compare.modes: need at least one mode, e.g. [{name: tanh, output: tanh_difference}]")
        outputs = set(p.stem for p in (config_dir() / "output").glob("*.yaml"))
        modes = []
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"name": entry, "output": entry}
            entry = dict(entry)
            unknown = sorted(set(entry) - {"name", "output", "loss", "overrides"})
            if unknown:
                raise ConfigError(f"compare.modes[{i}]: unknown key(s) {', '.join(unknown)} "
                                  "(name, output, loss, overrides)")
            output = entry.get("output")
            if output not in outputs:
                raise ConfigError(f"compare.modes[{i}].output: unknown preset {output!r} "
                                  f"(available: {', '.join(sorted(outputs))})")
            name = str(entry.get("name") or output)
            if not name.replace("-", "_").replace(".", "_").isidentifier():
                raise ConfigError(f"compare.modes[{i}].name: {name!r} must be a plain folder name")
            overrides = entry.get("overrides") or []
            if isinstance(overrides, str):
                overrides = [overrides]
            modes.append(Mode(name, str(output), str(entry.get("loss") or default_loss),
                              tuple(str(o) for o in overrides)))
        names = [m.name for m in modes]
        if len(set(names)) != len(names):
            raise ConfigError(f"compare.modes: names must be distinct, got {names}")
        seeds = c.get("seeds")
        if isinstance(seeds, int):
            seeds = [seeds]
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds) \
                or len(set(seeds)) != len(seeds):
            raise ConfigError(f"compare.seeds: need a list of distinct integers, got {seeds}")
        out_dir = c.get("out_dir")
        if not out_dir:
            raise ConfigError("compare.out_dir: need a folder for the results")
        return cls(modes, [int(s) for s in seeds], Path(str(out_dir)).expanduser(),
                   OmegaConf.to_container(c.get("eval") or {}, resolve=True),
                   OmegaConf.to_container(c.get("figure") or {}, resolve=True),
                   bool(c.get("progress", True)), _threads(c.get("threads"), "compare.threads"))


def _threads(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}: must be null or an integer >= 1, got {value!r}")
    return int(value)


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0].strip()


def shared_overrides(argv: Sequence[str]) -> list[str]:
    """The command line's overrides, checked: the per-run keys belong to compare.modes/seeds."""
    for o in argv:
        if _override_key(o) in PER_RUN_KEYS:
            raise ConfigError(
                f"{o}: {_override_key(o)} is set per run by the comparison; choose heads and losses "
                "with compare.modes=[...] and seeds with compare.seeds=[...]"
            )
    return list(argv)


def run_config(overrides: Sequence[str], mode: Mode, seed: int) -> DictConfig:
    """The training config of one run: the shared overrides + this mode's head/loss + seed."""
    cfg = compose("compare", [*overrides, *mode.run_overrides(seed)])
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("compare", None)
    return OmegaConf.create(container)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def config_differences(configs: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """{dotted key: {run: value}} for every key whose resolved value differs between runs."""
    flat = {run: _flatten(c) for run, c in configs.items()}
    keys = sorted(set().union(*(f.keys() for f in flat.values())))
    diff = {}
    for k in keys:
        values = {run: f.get(k, "<missing>") for run, f in flat.items()}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            diff[k] = values
    return diff


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    mode: Mode
    seed: int
    run_dir: Path
    config: dict
    train: dict = field(default_factory=dict)
    evaluation: dict | None = None
    reused: bool = False

    @property
    def key(self) -> str:
        return f"{self.mode.name}/seed{self.seed}"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(str(path), dumps_json(obj))


def train_run(cfg: DictConfig, run_dir: Path) -> tuple[dict, bool]:
    """Train one run (or reuse / resume it); returns (train summary, reused)."""
    from .solver import Solver, TrainingDiverged

    resolved = OmegaConf.to_container(cfg, resolve=True)
    saved_path = run_dir / RUN_CONFIG
    if saved_path.is_file():
        saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True)
        changed = config_differences({"saved": saved, "now": resolved})
        if changed:
            keys = ", ".join(list(changed)[:6])
            raise ConfigError(
                f"{run_dir} was trained with other settings ({keys}); use another compare.out_dir "
                "or delete that run folder"
            )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(str(saved_path), OmegaConf.to_yaml(OmegaConf.create(resolved)))
    done = _read_json(run_dir / RUN_SUMMARY)
    if done is not None:
        return done, True
    if (run_dir / "last.pt").is_file():
        cfg = OmegaConf.merge(cfg, {"trainer": {"resume": str(run_dir)}})
    t0 = time.perf_counter()
    status, message = "finished", None
    solver = Solver(cfg, run_dir)
    try:
        summary = solver.train()
    except TrainingDiverged as exc:
        # A head that diverges is a result, not a crash: keep its best checkpoint and say so.
        status, message = "diverged", str(exc)
        summary = solver.summary()
        log.warning("%s: %s", run_dir, exc)
    summary.update(status=status, message=message, wall_s=time.perf_counter() - t0)
    _write_json(run_dir / RUN_SUMMARY, summary)
    return summary, False


def evaluate_run(run_dir: Path, data_cfg: dict, eval_settings: dict) -> dict | None:
    """Evaluate the run's best checkpoint (last.pt if none); reuse a finished evaluation."""
    from .evaluate import evaluate

    out = run_dir / EVAL_DIR
    checkpoint = run_dir / "best.pt"
    if not checkpoint.is_file():
        checkpoint = run_dir / "last.pt"
    settings = {"split": "test", "metrics": "sdr", "progress": False, **eval_settings}
    # What decides the numbers: reuse an evaluation only if it was made with these settings.
    decisive = {k: v for k, v in settings.items() if k != "progress"}
    used = json.loads(json.dumps({"checkpoint": checkpoint.name, "settings": decisive, "data": data_cfg},
                                 default=str))
    done = _read_json(out / "summary.json")
    if done is not None and "aggregates" in done and _read_json(run_dir / EVAL_SETTINGS) == used:
        return done
    if done is not None:
        log.info("%s: evaluation settings changed (or unrecorded); evaluating again", run_dir)
    if not checkpoint.is_file():
        return None
    cfg = OmegaConf.create({**settings, "checkpoint": str(checkpoint), "estimates": None,
                            "out_dir": str(out), "overwrite": True, "data": data_cfg})
    (run_dir / EVAL_SETTINGS).unlink(missing_ok=True)
    result = evaluate(cfg)
    _write_json(run_dir / EVAL_SETTINGS, used)
    return result


def run_all(settings: Settings, overrides: Sequence[str]) -> list[RunResult]:
    """Compose every run's config first (errors before any training), then train + evaluate."""
    from tqdm import tqdm

    plans = []
    for mode in settings.modes:
        for seed in settings.seeds:
            cfg = run_config(overrides, mode, seed)
            plans.append((mode, seed, cfg))
    results = []
    bar = tqdm(plans, desc="compare", unit="run", disable=not settings.progress, dynamic_ncols=True)
    for mode, seed, cfg in bar:
        bar.set_postfix_str(f"{mode.name} seed {seed}")
        run_dir = settings.out_dir / "runs" / mode.name / f"seed{seed}"
        summary, reused = train_run(cfg, run_dir)
        evaluation = evaluate_run(run_dir, OmegaConf.to_container(cfg.data, resolve=True), settings.eval)
        results.append(RunResult(mode, seed, run_dir, OmegaConf.to_container(cfg, resolve=True),
                                 summary, evaluation, reused))
    bar.close()
    return results


# --------------------------------------------------------------------------------------------
# Aggregation over seeds
# --------------------------------------------------------------------------------------------


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """mean, sample SD (ddof 1), min, max and n of the finite values."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not v.size:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "values": list(values)}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size), "values": list(values)}


def aggregate(results: Sequence[RunResult], modes: Sequence[Mode]) -> dict[str, Any]:
    """Per source and mode: SDR (both aggregations) and clipping statistics over seeds."""
    evaluated = [r for r in results if r.evaluation]
    sources: list[str] = []
    for r in evaluated:
        for s in r.evaluation["sources"]:
            if s not in sources:
                sources.append(s)
    table: dict[str, Any] = {}
    for s in sources:
        table[s] = {}
        for m in modes:
            runs = [r for r in evaluated if r.mode.name == m.name and s in r.evaluation["sources"]]
            entry: dict[str, Any] = {"seeds": [r.seed for r in runs]}
            for agg, stat, _ in SDR_COLUMNS:
                entry[f"sdr_{agg}_{stat}"] = spread(
                    [r.evaluation["aggregates"]["SDR"][s][agg][stat] for r in runs])
            for key, _, _ in CLIPPING_COLUMNS:
                entry[key] = spread([clipping_value(r.evaluation, s, key) for r in runs])
            overshoot = [clipping_value(r.evaluation, s, "overshoot_max") for r in runs]
            entry["overshoot_max"] = spread(overshoot)
            table[s][m.name] = entry
    # Paired differences to the first mode: same seed = same init (body) and example order.
    paired: dict[str, Any] = {}
    base = modes[0].name
    for s in sources:
        paired[s] = {}
        for m in modes[1:]:
            deltas = {}
            for agg, stat, _ in SDR_COLUMNS[:2]:
                d = []
                for seed in sorted({r.seed for r in evaluated}):
                    a = _sdr(evaluated, base, seed, s, agg, stat)
                    b = _sdr(evaluated, m.name, seed, s, agg, stat)
                    if a is not None and b is not None:
                        d.append(b - a)
                deltas[f"sdr_{agg}_{stat}"] = spread(d)
            paired[s][m.name] = deltas
    return {"sources": sources, "table": table, "paired_vs_first_mode": paired, "first_mode": base}


def clipping_value(evaluation: dict, source: str, key: str) -> float | None:
    """A clipping statistic of one evaluation (aggregated over its tracks by the report)."""
    return evaluation["clipping"].get(source, {}).get(key)


def _sdr(results, mode: str, seed: int, source: str, agg: str, stat: str) -> float | None:
    for r in results:
        if r.mode.name == mode and r.seed == seed and source in r.evaluation["sources"]:
            return r.evaluation["aggregates"]["SDR"][source][agg][stat]
    return None


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def quiet_passage(references: np.ndarray, source: int, length: int) -> tuple[int, float, float]:
    """Start of the loudest ``length``-sample window where every source but ``source`` is silent.

    Returns (start, peak of the source there, energy ratio others / source). The search is on
    a quarter-window grid; when no window has silent others, the one where they are quietest
    relative to the source is returned (its ratio says so).
    """
    total = references.shape[-1]
    length = min(length, total)
    hop = max(1, length // 4)
    starts = np.arange(0, total - length + 1, hop)
    target = references[source]
    others = np.delete(references, source, axis=0)
    best, best_key = (0, 0.0, math.inf), None
    for start in starts:
        t = target[:, start:start + length]
        e_t = float(np.square(t).sum())
        e_o = float(np.square(others[:, :, start:start + length]).sum()) if others.size else 0.0
        ratio = e_o / e_t if e_t > 0 else math.inf
        peak = float(np.abs(t).max())
        key = (ratio < 1e-4, peak if ratio < 1e-4 else -ratio)
        if best_key is None or key > best_key:
            best, best_key = (int(start), peak, ratio), key
    return best


def bound_marks(est: np.ndarray, raw: np.ndarray | None, low: float, high: float | None) -> np.ndarray:
    """Samples to mark: the estimate at or beyond a bound, or ``raw`` (before the clip) beyond it.

    ``high=None`` (a one-sided head: relu, softplus) marks the lower bound only.
    """
    at = est <= low
    if high is not None:
        at |= est >= high
    if raw is not None:
        at |= raw < low
        if high is not None:
            at |= raw > high
    return at


def _bound_lines(ax: Any, low: float, high: float | None) -> None:
    for b in (low, high):
        if b is not None:
            ax.axhline(b, color="red", lw=0.3, ls="--")


def _separate_passage(separator: Any, mixture: np.ndarray, sl: slice, si: int) -> tuple[np.ndarray, np.ndarray]:
    """Source ``si``'s estimate and unclipped output (C, len) on ``mixture[:, sl]`` only.

    Separates the passage plus the model's context on each side, the window aligned to the
    separator's chunk grid, so the result equals separating the whole track and cropping.
    """
    model = separator.model
    ctx = model.input_samples - model.output_samples
    step = separator.step_samples
    total = mixture.shape[-1]
    lo = max(0, sl.start - ctx) // step * step
    hi = min(total, -(-(sl.stop + ctx) // step) * step)
    sep = separator.separate_tensor(torch.from_numpy(np.ascontiguousarray(mixture[:, lo:hi])))
    crop = slice(sl.start - lo, sl.stop - lo)
    return sep.stems[si, :, crop].numpy(), sep.unclipped[si, :, crop].numpy()


def waveform_figure(path: Path, results: Sequence[RunResult], settings: Settings) -> dict | None:
    """Input vs each mode's estimate of one source on a loud passage where only it plays."""
    from .checkpoint import load_model
    from .data import load_split
    from .inference import Separator, resolve_device

    firsts = []
    for mode in settings.modes:
        run = next((r for r in results if r.mode.name == mode.name
                    and (r.run_dir / "best.pt").is_file()), None)
        if run is not None:
            firsts.append(run)
    if not firsts:
        return None
    device = resolve_device(settings.eval.get("device", "auto"))
    models = [load_model(r.run_dir / "best.pt", device) for r in firsts]
    model0 = models[0]
    sources = list(model0.sources)
    name = settings.figure.get("source") or sources[0]
    if name not in sources:
        raise ConfigError(f"compare.figure.source: {name!r} is not a model source ({', '.join(sources)})")
    si = sources.index(name)
    tracks = load_split(firsts[0].config["data"], str(settings.eval.get("split", "test")),
                        sample_rate_hz=model0.sample_rate_hz, channels=model0.config.channels, sources=sources)
    wanted = settings.figure.get("track")
    if wanted is not None:
        tracks = [t for t in tracks if t.name == wanted]
        if not tracks:
            raise ConfigError(f"compare.figure.track: no test track named {wanted!r}")
    rate = model0.sample_rate_hz
    length = int(float(settings.figure.get("passage_seconds", 2.0)) * rate)
    choice = None
    for t in tracks:
        start, peak, ratio = quiet_passage(np.asarray(t.sources), si, length)
        key = (ratio < 1e-4, peak if ratio < 1e-4 else -ratio)
        if choice is None or key > choice[0]:
            choice = (key, t, start, peak, ratio)
    _, track, start, peak, ratio = choice
    sl = slice(start, min(start + length, track.samples))
    mixture = np.array(track.mixture)
    reference = np.array(track.sources[si])
    rows = []
    for run, model in zip(firsts, models, strict=True):
        low, high = float(model.output_mode.low), model.output_mode.high
        high = None if high is None else float(high)
        est, raw = _separate_passage(Separator(model, device=device), mixture, sl, si)
        seg_ref = reference[:, sl]
        hits = bound_hits(est[None], raw[None], low, high)[0]
        sdr = float(framewise_sdr(seg_ref[None], est[None], win=seg_ref.shape[-1], hop=seg_ref.shape[-1])[0, 0])
        rows.append({"mode": run.mode.name, "seed": run.seed, "est": est[0], "raw": raw[0],
                     "low": low, "high": high,
                     "peak_ratio": float(np.abs(est).max() / max(np.abs(seg_ref).max(), 1e-12)),
                     "sdr_db": sdr, "clipped": hits["clipped_count"], "raw_beyond": hits["overshoot_count"]})
    # The input row and the y range: the widest bounds of any mode (a one-sided head has none above).
    low = min(r["low"] for r in rows)
    highs = [r["high"] for r in rows if r["high"] is not None]
    high = max(highs) if highs else None
    top = high if high is not None else max(1.0, float(np.abs(mixture[:, sl]).max()))
    t = np.arange(sl.start, sl.stop) / rate

    plt = pyplot()
    fig, axes = plt.subplots(1 + len(rows), 1, figsize=(10, 1.9 * (1 + len(rows))), sharex=True, sharey=True)
    x = mixture[0, sl]
    ax = axes[0]
    ax.plot(t, x, lw=0.5, color="black")
    hit = bound_marks(x, None, low, high)
    ax.scatter(t[hit], x[hit], s=2, color="red")
    ax.set_title(f"input mixture ({track.name}, channel 0; other sources' energy "
                 f"{ratio:.1e} x {name}'s here)", fontsize=8)
    _bound_lines(ax, low, high)
    for ax, row in zip(axes[1:], rows, strict=True):
        ax.plot(t, reference[0, sl], lw=0.5, color="0.75", label=f"true {name}")
        ax.plot(t, row["est"], lw=0.5, color="tab:blue", label="estimate")
        at = bound_marks(row["est"], row["raw"], row["low"], row["high"])
        ax.scatter(t[at], row["est"][at], s=2, color="red", label="clipped (at/beyond bound)")
        ax.set_title(f"{row['mode']} (seed {row['seed']}): {name}; peak ratio {row['peak_ratio']:.3f}, "
                     f"passage SDR {row['sdr_db']:.2f} dB, {row['clipped']} samples at a bound "
                     "(both channels)", fontsize=8)
        _bound_lines(ax, row["low"], row["high"])
    for ax in axes:
        ax.set_ylim(low * 1.1, top * 1.1)
    axes[1].legend(loc="upper right", fontsize=6, markerscale=3)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(f"Loud passage where only {name} plays: red = samples at or beyond the bound", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return {"track": track.name, "source": name, "start_seconds": start / rate,
            "seconds": (sl.stop - sl.start) / rate, "other_sources_energy_ratio": ratio,
            "reference_peak": peak,
            "rows": [{k: v for k, v in r.items() if k not in ("est", "raw")} for r in rows]}


def _read_metrics(run_dir: Path) -> list[dict]:
    records = []
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by a kill
    return records


def curves_figure(path: Path, results: Sequence[RunResult], modes: Sequence[Mode]) -> None:
    """Training loss, validation MSE and validation SDR of every run (colour = mode)."""
    colours = {m.name: f"C{i}" for i, m in enumerate(modes)}
    per_run = {r.key: (r, _read_metrics(r.run_dir)) for r in results}
    sources: list[str] = []
    for _, recs in per_run.values():
        for rec in recs:
            if rec.get("kind") == "valid":
                sources += [s for s in rec["sdr"] if s not in sources]

    plt = pyplot()
    n = 2 + len(sources)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4))
    seen = set()
    for r, recs in per_run.values():
        c = colours[r.mode.name]
        label = r.mode.name if r.mode.name not in seen else None
        seen.add(r.mode.name)
        train = [(x["step"], x["loss"]) for x in recs if x.get("kind") == "train"]
        if train:
            steps, loss = np.array(train).T
            k = max(1, len(loss) // 50)
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            axes[0].plot(steps[k - 1:], smooth, color=c, lw=0.8, alpha=0.8,
                         label=f"{label} ({r.mode.loss})" if label else None)
        valid = [x for x in recs if x.get("kind") == "valid"]
        if valid:
            steps = [x["step"] for x in valid]
            axes[1].plot(steps, [x["loss"] for x in valid], color=c, lw=0.8, marker=".", label=label)
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


def sdr_figure(path: Path, summary: dict, modes: Sequence[Mode]) -> None:
    """Per source: each seed's SDR (dots) and the mean over seeds (bar), both aggregations."""
    sources = summary["sources"]

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(5 + 1.6 * len(sources) * len(modes) / 2, 3.6), sharey=True)
    for ax, (agg, stat, title) in zip(axes, SDR_COLUMNS[:2], strict=True):
        width = 0.8 / len(modes)
        for i, m in enumerate(modes):
            for j, s in enumerate(sources):
                entry = summary["table"][s][m.name][f"sdr_{agg}_{stat}"]
                x = j + (i - (len(modes) - 1) / 2) * width
                if entry["mean"] is not None:
                    ax.bar(x, entry["mean"], width * 0.9, color=f"C{i}", alpha=0.5,
                           label=m.name if j == 0 else None)
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
# results.md
# --------------------------------------------------------------------------------------------


def _cell(entry: dict, scale: float = 1.0, digits: int = 2) -> str:
    if entry["mean"] is None:
        return "-"
    if entry["n"] == 1:
        return f"{entry['mean'] * scale:.{digits}f}"
    return (f"{entry['mean'] * scale:.{digits}f} ± {entry['std'] * scale:.{digits}f} "
            f"[{entry['min'] * scale:.{digits}f}, {entry['max'] * scale:.{digits}f}]")


def _machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def sdr_table(summary: dict, modes: Sequence[Mode]) -> list[str]:
    lines = ["| source | mode | " + " | ".join(t for _, _, t in SDR_COLUMNS) + " |",
             "|---|---|" + "---|" * len(SDR_COLUMNS)]
    for s in summary["sources"]:
        for m in modes:
            e = summary["table"][s][m.name]
            lines.append(f"| {s} | {m.name} | " + " | ".join(
                _cell(e[f"sdr_{agg}_{stat}"]) for agg, stat, _ in SDR_COLUMNS) + " |")
    return lines


def clipping_table(summary: dict, modes: Sequence[Mode]) -> list[str]:
    lines = ["| source | mode | " + " | ".join(t for _, t, _ in CLIPPING_COLUMNS) + " |",
             "|---|---|" + "---|" * len(CLIPPING_COLUMNS)]
    for s in summary["sources"]:
        for m in modes:
            e = summary["table"][s][m.name]
            lines.append(f"| {s} | {m.name} | " + " | ".join(
                _cell(e[key], scale, 3) for key, _, scale in CLIPPING_COLUMNS) + " |")
    return lines


def per_seed_table(results: Sequence[RunResult]) -> list[str]:
    lines = ["| mode | seed | source | SDR pooled median | SDR SiSEC median | clipped % | raw beyond % | "
             "peak ratio | best epoch | steps | status | train s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if not r.evaluation:
            lines.append(f"| {r.mode.name} | {r.seed} | - | - | - | - | - | - | - | - | "
                         f"{r.train.get('status', '?')} (not evaluated) | - |")
            continue
        for s in r.evaluation["sources"]:
            a = r.evaluation["aggregates"]["SDR"][s]
            c = {k: clipping_value(r.evaluation, s, k) for k in ("fraction_clipped", "fraction_overshoot", "peak_ratio")}
            fo = c.get("fraction_overshoot")
            lines.append(
                f"| {r.mode.name} | {r.seed} | {s} | {_f(a['pooled_frames']['median'])} | "
                f"{_f(a['median_of_track_medians']['median'])} | {_f(100 * c['fraction_clipped'], 3)} | "
                f"{_f(None if fo is None else 100 * fo, 3)} | {_f(c.get('peak_ratio'), 3)} | "
                f"{r.train.get('best_epoch')} | {r.train.get('global_step')} | {r.train.get('status', '?')} | "
                f"{_f(r.train.get('wall_s'), 0)} |")
    return lines


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def findings(summary: dict, modes: Sequence[Mode]) -> list[str]:
    """Plain sentences: each mode against the first, per source, with the seed spread."""
    lines = []
    base = summary["first_mode"]
    for s in summary["sources"]:
        for m in modes[1:]:
            d = summary["paired_vs_first_mode"][s][m.name]
            for agg, stat, title in SDR_COLUMNS[:2]:
                e = d[f"sdr_{agg}_{stat}"]
                if e["mean"] is None:
                    continue
                a = summary["table"][s][base][f"sdr_{agg}_{stat}"]
                b = summary["table"][s][m.name][f"sdr_{agg}_{stat}"]
                if e["n"] > 1:
                    separated = b["min"] > a["max"] or b["max"] < a["min"]
                    consistent = e["min"] > 0 or e["max"] < 0
                    verdict = ("the seed ranges do not overlap" if separated else
                               "same sign on every seed, but the seed ranges overlap" if consistent else
                               "the sign changes between seeds: not a difference at this scale")
                    spread_txt = f"paired over {e['n']} seeds: {e['mean']:+.2f} ± {e['std']:.2f} dB; {verdict}"
                else:
                    spread_txt = "one seed: no spread to judge it against"
                word = "higher" if e["mean"] > 0 else "lower"
                lines.append(f"- **{s}**, {title}: {m.name} is {abs(e['mean']):.2f} dB {word} than {base} "
                             f"({_cell(b)} vs {_cell(a)} dB; {spread_txt}).")
        for m in modes:
            e = summary["table"][s][m.name]
            pr, lg, fc, fo = e["peak_ratio"], e["loud_gain_db"], e["fraction_clipped"], e["fraction_overshoot"]
            parts = []
            if pr["mean"] is not None:
                parts.append(f"peaks at {pr['mean']:.3f} of the reference's")
            if lg["mean"] is not None:
                parts.append(f"loud samples need {lg['mean']:+.2f} dB of gain to match "
                             f"({'attenuated' if lg['mean'] > 0 else 'too loud'})")
            if fc["mean"] is not None:
                parts.append(f"{100 * fc['mean']:.3f}% of samples at a bound")
            if fo["mean"] is not None:
                parts.append(f"{100 * fo['mean']:.3f}% of raw outputs beyond it")
            if parts:
                lines.append(f"- {s}, {m.name}: " + "; ".join(parts) + " (mean over seeds).")
    return lines


def write_results(settings: Settings, results: Sequence[RunResult], summary: dict, command: str,
                  wall_s: float, figures: dict[str, str], waveform: dict | None,
                  diff: dict[str, dict[str, Any]] | None = None) -> str:
    modes = settings.modes
    if diff is None:
        diff = config_differences({r.key: r.config for r in results})
    head_keys = {k: v for k, v in diff.items() if k != "seed" and k != "name"}
    n_keys = len(_flatten(results[0].config)) if results else 0
    first = results[0].config if results else {}
    lines = [f"# Output-mode comparison: {', '.join(m.name for m in modes)}", ""]
    lines += [f"Command: `{command}`", "",
              f"Written {_dt.datetime.now().isoformat(timespec='seconds')}; wall time of this command "
              f"{wall_s / 60:.1f} min; training time summed over runs "
              f"{sum(r.train.get('wall_s') or 0 for r in results) / 60:.1f} min "
              f"({sum(r.reused for r in results)} of {len(results)} runs reused from an earlier call).", ""]
    m = _machine()
    lines += [f"Machine: {m['platform']}, {m['cpu_count']} CPU cores ({m['torch_threads']} torch thread(s)), "
              f"{'GPU ' + m['cuda'] if m['cuda'] else 'no GPU'}, torch {m['torch']}.", ""]
    lines += ["## What differs between the runs", ""]
    lines += ["Modes: " + "; ".join(f"**{x.name}** = output `{x.output}`, loss `{x.loss}`"
                                      + (f", extra overrides {list(x.overrides)}" if x.overrides else "")
                                      for x in modes) + f". Seeds: {settings.seeds}.", ""]
    lines += [f"The resolved training configs of the {len(results)} runs have {n_keys} settings; "
              f"they differ only in: {', '.join(f'`{k}`' for k in head_keys) or 'nothing'}"
              f" (plus `seed`, and `name`, the run's label). Same model "
              f"(`{first.get('model', {}).get('name')}`), data (`{first.get('data', {}).get('name')}`), "
              f"optimiser, trainer and evaluation for all.", ""]
    if head_keys:
        lines += ["| setting | " + " | ".join(x.name for x in modes) + " |", "|---|" + "---|" * len(modes)]
        for k, values in head_keys.items():
            per_mode = []
            for x in modes:
                vals = {json.dumps(v, default=str) for run, v in values.items() if run.startswith(x.name + "/")}
                per_mode.append(", ".join(sorted(vals)))
            lines.append(f"| `{k}` | " + " | ".join(per_mode) + " |")
        lines.append("")
    ev = settings.eval
    lines += ["## SDR per source (dB)", "",
              f"Test split `{ev.get('split', 'test')}`, framewise SDR (museval's) in 1-s frames. Cells: mean ± "
              f"sample SD over seeds [min, max]. *Pooled*: all frames of all tracks (Wave-U-Net papers); "
              "*SiSEC*: median over frames per track, then median over tracks.", ""]
    lines += sdr_table(summary, modes) + [""]
    lines += ["## Clipping statistics", "",
              "clipped: final estimate samples at or beyond a bound; raw beyond bound: output before the "
              "test-time clip outside [-1, 1] (linear heads); saturated: |y| > 0.99; peak ratio: "
              "max|estimate| / max|reference|; loud-passage gain: least-squares gain that matches the "
              "estimate to the reference on samples with |reference| >= 0.5 (> 0 dB: attenuated).", ""]
    lines += clipping_table(summary, modes) + [""]
    lines += ["## What the numbers say", ""] + findings(summary, modes) + [""]
    if waveform:
        lines += ["## Figures", "",
                  f"![waveforms]({figures['waveform']})", "",
                  f"{figures['waveform']}: track `{waveform['track']}`, {waveform['seconds']:.1f} s from "
                  f"{waveform['start_seconds']:.2f} s, where the other sources' energy is "
                  f"{waveform['other_sources_energy_ratio']:.1e} x {waveform['source']}'s (the input *is* the "
                  f"{waveform['source']}); reference peak {waveform['reference_peak']:.3f}.", ""]
        for row in waveform["rows"]:
            lines.append(f"- {row['mode']} (seed {row['seed']}): peak ratio {row['peak_ratio']:.3f}, passage SDR "
                         f"{row['sdr_db']:.2f} dB, {row['clipped']} samples at a bound, {row['raw_beyond']} raw "
                         "samples beyond it (both channels).")
        lines.append("")
    else:
        lines += ["## Figures", ""]
    lines += [f"![training curves]({figures['curves']})", "", f"![SDR by mode]({figures['sdr']})", ""]
    lines += ["## Every run", ""] + per_seed_table(results) + [""]
    lines += [f"Run folders: `runs/<mode>/seed<k>/` (config.yaml, best.pt, metrics.jsonl, TensorBoard, "
              f"eval/summary.json + report.md). All numbers: `{JSON_NAME}`.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def compare(cfg: DictConfig, overrides: Sequence[str] = (), command: str | None = None) -> dict[str, Any]:
    """Run (or continue) a comparison; returns what ``comparison.json`` holds.

    Args:
        cfg: ``compose("compare", overrides)``.
        overrides: the same overrides; each run's training config is composed from them.
        command: the command line recorded in results.md.
    """
    t0 = time.perf_counter()
    settings = Settings.from_config(cfg)
    overrides = shared_overrides(overrides)
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        return _compare(settings, overrides, command, t0)
    finally:
        torch.set_num_threads(threads)


def _check_out_dir(out: Path) -> None:
    """Refuse to replace files of ours that an earlier comparison in ``out`` did not write."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"compare.out_dir: {out} exists and is not a directory")
    ours = [RESULTS_NAME, JSON_NAME, WAVEFORM_NAME, CURVES_NAME, SDR_FIGURE_NAME]
    present = [n for n in ours if (out / n).exists()]
    previous = _read_json(out / JSON_NAME) or {}
    if present and previous.get("generator") != GENERATOR:
        raise ConfigError(f"compare.out_dir: {out} holds {', '.join(present)} not written by "
                          "`waveunet compare`; choose another compare.out_dir")


def _compare(settings: Settings, overrides: list[str], command: str | None, t0: float) -> dict[str, Any]:
    out = settings.out_dir
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_all(settings, overrides)
    summary = aggregate(results, settings.modes)
    figures = {"waveform": WAVEFORM_NAME, "curves": CURVES_NAME, "sdr": SDR_FIGURE_NAME}
    waveform = waveform_figure(out / WAVEFORM_NAME, results, settings)
    curves_figure(out / CURVES_NAME, results, settings.modes)
    if summary["sources"]:
        sdr_figure(out / SDR_FIGURE_NAME, summary, settings.modes)
    wall = time.perf_counter() - t0
    command = command or "waveunet compare " + " ".join(overrides)
    diff = config_differences({r.key: r.config for r in results})
    text = write_results(settings, results, summary, command, wall, figures, waveform, diff)
    payload = {
        "generator": GENERATOR,
        "command": command,
        "machine": _machine(),
        "wall_s": wall,
        "modes": [m.__dict__ for m in settings.modes],
        "seeds": settings.seeds,
        "config_differences": diff,
        **summary,
        "waveform": waveform,
        "runs": [{"mode": r.mode.name, "seed": r.seed, "run_dir": str(r.run_dir), "reused": r.reused,
                  "status": r.train.get("status"), "train_wall_s": r.train.get("wall_s"),
                  "global_step": r.train.get("global_step"), "best_epoch": r.train.get("best_epoch"),
                  "best_valid_loss": r.train.get("best_valid_loss"),
                  "evaluation": None if r.evaluation is None else str(r.run_dir / EVAL_DIR / "summary.json")}
                 for r in results],
        "files": {"results": RESULTS_NAME, **figures},
    }
    _write_json(out / JSON_NAME, payload)
    atomic_write_text(str(out / RESULTS_NAME), text)
    payload["out_dir"] = str(out.resolve())
    return payload


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    cfg = compose("compare", argv)
    if str(OmegaConf.select(cfg, "compare.kind", default="comparison")) == "saturation":
        from .saturation import run_from_config

        result = run_from_config(cfg, command="waveunet compare " + " ".join(argv))
        print(f"saturation experiment: {Path(result['out_dir']) / 'saturation.md'}")
        return 0
    result = compare(cfg, argv, command="waveunet compare " + " ".join(argv))
    print(f"results: {Path(result['out_dir']) / RESULTS_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
