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
from .metrics import bound_hits, dumps_json, framewise_sdr, to_jsonable
from .reporting.comparison import (
    CLIPPING_COLUMNS,
    RUN_SCORES,
    SDR_COLUMNS,
    results_markdown,
    sdr_key,
)
from .reporting.figures import (
    comparison_waveform,
    passage_preference,
    quiet_passage,
    sdr_by_mode,
    training_curves,
)

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


def clipping_value(evaluation: dict, source: str, key: str) -> float | None:
    """A clipping statistic of one evaluation (aggregated over its tracks by the report)."""
    return evaluation["clipping"].get(source, {}).get(key)


def sdr_value(evaluation: dict, source: str, aggregation: str, statistic: str) -> float | None:
    return evaluation["aggregates"]["SDR"][source][aggregation][statistic]


def run_scores(evaluation: dict) -> dict[str, dict[str, float | None]]:
    """Per source of one run's evaluation, the numbers of the "Every run" table."""
    scores = {}
    for s in evaluation["sources"]:
        scores[s] = {sdr_key(a, st): sdr_value(evaluation, s, a, st) for a, st, _ in SDR_COLUMNS}
        scores[s].update({k: clipping_value(evaluation, s, k) for k in RUN_SCORES
                          if not k.startswith("sdr_")})
    return scores


def aggregate(results: Sequence[RunResult], modes: Sequence[Mode]) -> dict[str, Any]:
    """Per source and mode: SDR (both aggregations) and clipping statistics over seeds."""
    evaluated = [r for r in results if r.evaluation]
    sources: list[str] = []
    for r in evaluated:
        sources += [s for s in r.evaluation["sources"] if s not in sources]
    table: dict[str, Any] = {}
    for s in sources:
        table[s] = {}
        for m in modes:
            runs = [r for r in evaluated if r.mode.name == m.name and s in r.evaluation["sources"]]
            entry: dict[str, Any] = {"seeds": [r.seed for r in runs]}
            for agg, stat, _ in SDR_COLUMNS:
                entry[sdr_key(agg, stat)] = spread([sdr_value(r.evaluation, s, agg, stat)
                                                    for r in runs])
            for key in [k for k, _, _ in CLIPPING_COLUMNS] + ["overshoot_max"]:
                entry[key] = spread([clipping_value(r.evaluation, s, key) for r in runs])
            table[s][m.name] = entry
    # Paired differences to the first mode: same seed = same init (body) and example order.
    paired: dict[str, Any] = {}
    base = modes[0].name
    by_run = {(r.mode.name, r.seed): r for r in evaluated}
    seeds = sorted({r.seed for r in evaluated})
    for s in sources:
        paired[s] = {}
        for m in modes[1:]:
            deltas = {}
            for agg, stat, _ in SDR_COLUMNS[:2]:
                d = []
                for seed in seeds:
                    a, b = by_run.get((base, seed)), by_run.get((m.name, seed))
                    if a is None or b is None or s not in a.evaluation["sources"] \
                            or s not in b.evaluation["sources"]:
                        continue
                    va, vb = (sdr_value(x.evaluation, s, agg, stat) for x in (a, b))
                    if va is not None and vb is not None:
                        d.append(vb - va)
                deltas[sdr_key(agg, stat)] = spread(d)
            paired[s][m.name] = deltas
    return {"sources": sources, "table": table, "paired_vs_first_mode": paired, "first_mode": base}


# --------------------------------------------------------------------------------------------
# The waveform passage: one source where it plays alone, every mode's estimate of it
# --------------------------------------------------------------------------------------------


def _separate_passage(separator: Any, mixture: np.ndarray, sl: slice,
                      si: int) -> tuple[np.ndarray, np.ndarray]:
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


def waveform_passage(results: Sequence[RunResult], settings: Settings) -> dict | None:
    """Input and each mode's estimate of one source on a loud passage where only it plays.

    Returns what :func:`waveunet.reporting.figures.comparison_waveform` draws (arrays included)
    or None when no mode has a checkpoint.
    """
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
        raise ConfigError(f"compare.figure.source: {name!r} is not a model source "
                          f"({', '.join(sources)})")
    si = sources.index(name)
    tracks = load_split(firsts[0].config["data"], str(settings.eval.get("split", "test")),
                        sample_rate_hz=model0.sample_rate_hz, channels=model0.config.channels,
                        sources=sources)
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
        key = passage_preference(peak, ratio)
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
        n = seg_ref.shape[-1]
        sdr = float(framewise_sdr(seg_ref[None], est[None], win=n, hop=n)[0, 0])
        rows.append({"mode": run.mode.name, "seed": run.seed, "est": est[0], "raw": raw[0],
                     "low": low, "high": high,
                     "peak_ratio": float(np.abs(est).max() / max(np.abs(seg_ref).max(), 1e-12)),
                     "sdr_db": sdr, "clipped": hits["clipped_count"],
                     "raw_beyond": hits["overshoot_count"]})
    return {"track": track.name, "source": name, "start_seconds": start / rate,
            "seconds": (sl.stop - sl.start) / rate, "other_sources_energy_ratio": ratio,
            "reference_peak": peak, "rows": rows, "rate_hz": rate, "start": start,
            "mixture": mixture[:, sl], "reference": reference[:, sl]}


def passage_summary(passage: dict | None) -> dict | None:
    """The waveform passage without its audio: what comparison.json keeps."""
    if passage is None:
        return None
    keep = ("track", "source", "start_seconds", "seconds", "other_sources_energy_ratio",
            "reference_peak")
    return {**{k: passage[k] for k in keep},
            "rows": [{k: v for k, v in r.items() if k not in ("est", "raw")}
                     for r in passage["rows"]]}


def read_metrics(run_dir: Path) -> list[dict]:
    """A run's ``metrics.jsonl`` records (a line cut by a kill is skipped)."""
    records = []
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def compare(cfg: DictConfig, overrides: Sequence[str] = (),
            command: str | None = None) -> dict[str, Any]:
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


def _machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _run_entry(r: RunResult) -> dict[str, Any]:
    return {"mode": r.mode.name, "seed": r.seed, "run_dir": str(r.run_dir), "reused": r.reused,
            "status": r.train.get("status", "?"), "train_wall_s": r.train.get("wall_s"),
            "global_step": r.train.get("global_step"), "best_epoch": r.train.get("best_epoch"),
            "best_valid_loss": r.train.get("best_valid_loss"), "evaluated": bool(r.evaluation),
            "evaluation": None if r.evaluation is None
            else str(r.run_dir / EVAL_DIR / "summary.json"),
            "scores": run_scores(r.evaluation) if r.evaluation else {}}


def _compare(settings: Settings, overrides: list[str], command: str | None,
             t0: float) -> dict[str, Any]:
    out = settings.out_dir
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_all(settings, overrides)
    summary = aggregate(results, settings.modes)
    passage = waveform_passage(results, settings)
    if passage is not None:
        comparison_waveform(out / WAVEFORM_NAME, passage)
    training_curves(out / CURVES_NAME, [
        {"mode": r.mode.name, "loss": r.mode.loss, "records": read_metrics(r.run_dir),
         "colour": [m.name for m in settings.modes].index(r.mode.name)} for r in results])
    if summary["sources"]:
        sdr_by_mode(out / SDR_FIGURE_NAME, summary, [m.name for m in settings.modes],
                    [(sdr_key(a, s), title) for a, s, title in SDR_COLUMNS[:2]])
    first = results[0].config if results else {}
    payload = {
        "generator": GENERATOR,
        "command": command or "waveunet compare " + " ".join(overrides),
        "written": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": _machine(),
        "wall_s": time.perf_counter() - t0,
        "modes": [m.__dict__ for m in settings.modes],
        "seeds": settings.seeds,
        "config_differences": config_differences({r.key: r.config for r in results}),
        "settings_count": len(_flatten(first)),
        "model": first.get("model", {}).get("name"),
        "data": first.get("data", {}).get("name"),
        "eval": {"split": "test", **settings.eval},
        **summary,
        "waveform": passage_summary(passage),
        "runs": [_run_entry(r) for r in results],
        "files": {"results": RESULTS_NAME, "json": JSON_NAME, "waveform": WAVEFORM_NAME,
                  "curves": CURVES_NAME, "sdr": SDR_FIGURE_NAME},
    }
    _write_json(out / JSON_NAME, payload)
    atomic_write_text(str(out / RESULTS_NAME), results_markdown(to_jsonable(payload)))
    payload["out_dir"] = str(out.resolve())
    return payload


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        return 0
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
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
