"""``waveunet compare [hydra overrides]``: output modes side by side, trained identically.

Examples::

    waveunet compare experiment=compare_quick                 # make compare (~20 min, 2-core CPU)
    waveunet compare experiment=compare_paper data.root=/data/musdb18
    waveunet compare experiment=compare_quick compare.seeds=[0] \\
        'compare.modes=[{name:tanh,output:tanh_difference},{name:clip,output:clip_direct}]'

An experiment of :mod:`waveunet.experiments.base`: ``configs/compare.yaml`` (the ``train``
config, a ``compare`` block, and ``waveunet evaluate``'s settings under ``compare.eval``) -> one
training config per (mode, seed), composed from the *same* overrides plus only
``output=<mode>``, ``loss.name=<loss>``, ``seed=<k>`` ->
:class:`waveunet.training.solver.Solver` in ``<out_dir>/runs/<mode>/seed<k>/`` ->
:func:`waveunet.evaluation.evaluate.evaluate` of its best checkpoint on the same test split ->
aggregation over seeds -> ``comparison.json``, rendered into ``results.md`` and figures by
:mod:`waveunet.reporting`.

A run folder with a ``train_summary.json`` is finished and reused, one with a ``last.pt`` is
resumed, and an evaluation with a ``summary.json`` is reused when it was made with the same
settings: an interrupted compare continues where it stopped. Runs are reused by the resume rule
(:func:`waveunet.training.run_folder.refused_changes`): only how long, how visibly and where they
run may differ (a finished run given another ``trainer.max_epochs`` is continued, then evaluated
again), and a dataset root when the dataset was moved; a run folder trained with other
settings is refused, not mixed in.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..files import atomic_write_text, read_json, write_json
from ..metrics import bound_hits, framewise_sdr
from ..reporting.comparison import (
    CLIPPING_COLUMNS,
    RUN_SCORES,
    SDR_COLUMNS,
    results_markdown,
    sdr_key,
)
from ..reporting.figures import (
    comparison_waveform,
    passage_preference,
    quiet_passage,
    sdr_by_mode,
    training_curves,
)
from ..settings.compose import compose, flatten, meaning_changes
from ..settings.compose import config_differences as config_differences
from ..settings.schema import CompareConfig, EvalConfig, FigureConfig, typed
from ..training.run_folder import refused_changes
from ..training.run_log import read_metrics
from .base import Experiment, Mode, parse_modes, shared_overrides

log = logging.getLogger("waveunet.compare")  # the command's name

GENERATOR = "waveunet.compare"  # marks comparison.json as ours (the same mark in every version)
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
# Evaluation settings that cannot change the numbers: an evaluation is reused across them.
EVAL_REUSE_ALLOWED = ("settings.workers", "settings.figures")

HELP = """usage: waveunet compare [key=value overrides] [--help | --cfg job]

Train every output mode of compare.modes once per seed in compare.seeds, with identical
settings except the output head / loss, evaluate each on the same test split, and write
results.md, comparison.json and figures to compare.out_dir. Re-running continues an
interrupted comparison. (The saturation experiment is its own command: waveunet saturation.)

  waveunet compare experiment=compare_quick
  waveunet compare experiment=compare_paper data.root=/data/musdb18
  waveunet compare experiment=compare_quick compare.seeds=[0] compare.eval.metrics=bss

Settings and their meaning: configs/compare.yaml, on top of configs/train.yaml;
compare.eval: configs/eval/default.yaml."""


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """The comparison's checked settings, with its modes parsed."""

    modes: list[Mode]
    seeds: list[int]
    out_dir: Path
    eval: EvalConfig
    figure: FigureConfig
    progress: bool
    threads: int | None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Settings:
        if cfg.get("compare") is None:
            raise ConfigError("compare: missing (compose configs/compare.yaml)")
        c = typed(CompareConfig, cfg.compare, "compare.")
        default_loss = str(OmegaConf.select(cfg, "loss.name", default="mse"))
        return cls(parse_modes(c.modes, "compare.modes", default_loss), list(c.seeds),
                   Path(c.out_dir).expanduser(), c.eval, c.figure, c.progress, c.threads)


def run_config(overrides: Sequence[str], mode: Mode, seed: int) -> DictConfig:
    """The training config of one run: the shared overrides + this mode's head/loss + seed."""
    cfg = compose("compare", [*overrides, *mode.run_overrides(), f"seed={seed}",
                              f"name={mode.name}"])
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("compare", None)
    return OmegaConf.create(container)


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


def train_run(cfg: DictConfig, run_dir: Path) -> tuple[dict, bool]:
    """Train one run (or reuse / resume it); returns (train summary, reused)."""
    from ..training.solver import Solver, TrainingDiverged

    resolved = OmegaConf.to_container(cfg, resolve=True)
    saved_path = run_dir / RUN_CONFIG
    saved = None
    if saved_path.is_file():
        saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True)
        # The resume rule: what may change when a run is continued may change when it is reused.
        changed = refused_changes(saved, resolved)
        if changed:
            raise ConfigError(
                f"{run_dir} was trained with other settings ({', '.join(changed[:6])}); use "
                "another compare.out_dir or delete that run folder"
            )
    done = read_json(run_dir / RUN_SUMMARY)
    if done is not None and not _trains_further(saved, resolved, done):
        return done, True
    run_dir.mkdir(parents=True, exist_ok=True)
    # A run trained further is unfinished until it ends, and its evaluation (of the checkpoint
    # before) is made again; config.yaml says what it is trained with now.
    for stale in (RUN_SUMMARY, EVAL_SETTINGS):
        (run_dir / stale).unlink(missing_ok=True)
    atomic_write_text(saved_path, OmegaConf.to_yaml(OmegaConf.create(resolved)))
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
    write_json(run_dir / RUN_SUMMARY, summary)
    return summary, False


def _trains_further(saved: dict | None, now: dict, done: dict) -> bool:
    """Whether a finished run is continued rather than reused: its ``trainer.max_epochs``
    changed (as ``trainer.resume`` would continue it; one that stopped early stays stopped).
    A diverged run is a result as it is."""
    if saved is None or done.get("status") != "finished":
        return False
    before, after = ((cfg.get("trainer") or {}).get("max_epochs") for cfg in (saved, now))
    return before != after


def evaluate_run(run_dir: Path, data_cfg: dict, settings: EvalConfig,
                 progress: bool = False) -> dict | None:
    """Evaluate the run's best checkpoint (last.pt if none); reuse a finished evaluation made
    with the same settings."""
    from ..evaluation.evaluate import evaluate

    eval_settings = dataclasses.asdict(settings)

    out = run_dir / EVAL_DIR
    checkpoint = run_dir / "best.pt"
    if not checkpoint.is_file():
        checkpoint = run_dir / "last.pt"
    used = {"checkpoint": checkpoint.name, "settings": eval_settings, "data": data_cfg}
    done = read_json(out / "summary.json")
    saved = read_json(run_dir / EVAL_SETTINGS)
    if (done is not None and "aggregates" in done and saved is not None
            and not meaning_changes(saved, used, EVAL_REUSE_ALLOWED)):
        return done
    if done is not None:
        log.info("%s: evaluation settings changed (or unrecorded); evaluating again", run_dir)
    if not checkpoint.is_file():
        return None
    # threads: None, the comparison's own thread scope (compare.threads) holds
    cfg = {**eval_settings, "checkpoint": str(checkpoint), "estimates": None,
           "out_dir": str(out), "overwrite": True, "progress": progress, "data": data_cfg,
           "threads": None}
    (run_dir / EVAL_SETTINGS).unlink(missing_ok=True)
    result = evaluate(cfg)
    write_json(run_dir / EVAL_SETTINGS, used)
    return result


def run_all(settings: Settings, overrides: Sequence[str]) -> list[RunResult]:
    """Compose every run's config first (errors before any training), then train + evaluate."""
    from tqdm import tqdm

    plans = [(mode, seed, run_config(overrides, mode, seed))
             for mode in settings.modes for seed in settings.seeds]
    results = []
    bar = tqdm(plans, desc="compare", unit="run", disable=not settings.progress,
               dynamic_ncols=True)
    for mode, seed, cfg in bar:
        bar.set_postfix_str(f"{mode.name} seed {seed}")
        run_dir = settings.out_dir / "runs" / mode.name / f"seed{seed}"
        summary, reused = train_run(cfg, run_dir)
        evaluation = evaluate_run(run_dir, OmegaConf.to_container(cfg.data, resolve=True),
                                  settings.eval)
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


def waveform_passage(results: Sequence[RunResult], settings: Settings) -> dict | None:
    """Input and each mode's estimate of one source on a loud passage where only it plays.

    Returns what :func:`waveunet.reporting.figures.comparison_waveform` draws (arrays included)
    or None when no mode has a checkpoint.
    """
    from .. import data as data_lib
    from ..devices import resolve_device
    from ..model.checkpoint import load_model
    from ..separation.inference import Separator

    firsts = []
    for mode in settings.modes:
        run = next((r for r in results if r.mode.name == mode.name
                    and (r.run_dir / "best.pt").is_file()), None)
        if run is not None:
            firsts.append(run)
    if not firsts:
        return None
    device = resolve_device(settings.eval.device)
    models = [load_model(r.run_dir / "best.pt", device) for r in firsts]
    model0 = models[0]
    sources = list(model0.sources)
    name = settings.figure.source or sources[0]
    if name not in sources:
        raise ConfigError(f"compare.figure.source: {name!r} is not a model source "
                          f"({', '.join(sources)})")
    si = sources.index(name)
    tracks = data_lib.load_split(firsts[0].config["data"], settings.eval.split,
                        sample_rate_hz=model0.sample_rate_hz, channels=model0.config.channels,
                        sources=sources)
    wanted = settings.figure.track
    if wanted is not None:
        tracks = [t for t in tracks if t.name == wanted]
        if not tracks:
            raise ConfigError(f"compare.figure.track: no test track named {wanted!r}")
    rate = model0.sample_rate_hz
    length = int(settings.figure.passage_seconds * rate)
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
        separator = Separator(model, device=device,
                              precision=settings.eval.precision)
        passage = separator.separate_passage(mixture, sl.start, sl.stop)
        est, raw = passage.stems[si].numpy(), passage.unclipped[si].numpy()
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


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------


def _run_entry(r: RunResult) -> dict[str, Any]:
    return {"mode": r.mode.name, "seed": r.seed, "run_dir": str(r.run_dir), "reused": r.reused,
            "status": r.train.get("status", "?"), "train_wall_s": r.train.get("wall_s"),
            "global_step": r.train.get("global_step"), "best_epoch": r.train.get("best_epoch"),
            "best_valid_loss": r.train.get("best_valid_loss"), "evaluated": bool(r.evaluation),
            "evaluation": None if r.evaluation is None
            else str(r.run_dir / EVAL_DIR / "summary.json"),
            "scores": run_scores(r.evaluation) if r.evaluation else {}}


class Comparison(Experiment):
    """Output modes trained identically (once per seed), evaluated alike, side by side."""

    command_name = "compare"
    json_name = JSON_NAME
    generator = GENERATOR
    report_name = RESULTS_NAME
    help_text = HELP

    def __init__(self, cfg: DictConfig, overrides: Sequence[str] = (),
                 command: str | None = None):
        self.settings = Settings.from_config(cfg)
        self.overrides = shared_overrides(
            overrides, PER_RUN_KEYS, "choose heads and losses with compare.modes=[...] and "
            "seeds with compare.seeds=[...]")
        super().__init__(self.settings.out_dir, self.settings.threads,
                         command or "waveunet compare " + " ".join(self.overrides))
        self._figures: dict[str, Any] = {}  # what the figures need beyond the results JSON

    def files(self) -> list[str]:
        return [RESULTS_NAME, JSON_NAME, WAVEFORM_NAME, CURVES_NAME, SDR_FIGURE_NAME]

    def run(self) -> dict[str, Any]:
        s = self.settings
        results = run_all(s, self.overrides)
        summary = aggregate(results, s.modes)
        passage = waveform_passage(results, s)
        names = [m.name for m in s.modes]
        self._figures = {"passage": passage, "curves": [
            {"mode": r.mode.name, "loss": r.mode.loss, "records": read_metrics(r.run_dir),
             "colour": names.index(r.mode.name)} for r in results]}
        first = results[0].config if results else {}
        return {
            "modes": [dataclasses.asdict(m) for m in s.modes],
            "seeds": s.seeds,
            "config_differences": config_differences({r.key: r.config for r in results}),
            "settings_count": len(flatten(first)),
            "model": first.get("model", {}).get("name"),
            "data": first.get("data", {}).get("name"),
            "eval": dataclasses.asdict(s.eval),
            **summary,
            "waveform": passage_summary(passage),
            "runs": [_run_entry(r) for r in results],
            "files": {"results": RESULTS_NAME, "json": JSON_NAME, "waveform": WAVEFORM_NAME,
                      "curves": CURVES_NAME, "sdr": SDR_FIGURE_NAME},
        }

    def render(self, result: dict[str, Any]) -> None:
        out = self.out_dir
        if self._figures["passage"] is not None:
            comparison_waveform(out / WAVEFORM_NAME, self._figures["passage"])
        training_curves(out / CURVES_NAME, self._figures["curves"])
        if result["sources"]:
            sdr_by_mode(out / SDR_FIGURE_NAME, result, [m["name"] for m in result["modes"]],
                        [(sdr_key(a, s), title) for a, s, title in SDR_COLUMNS[:2]])
        atomic_write_text(out / RESULTS_NAME, results_markdown(result))


def compare(cfg: DictConfig, overrides: Sequence[str] = (),
            command: str | None = None) -> dict[str, Any]:
    """Run (or continue) a comparison; returns what ``comparison.json`` holds (+ ``out_dir``).

    Args:
        cfg: ``compose("compare", overrides)``.
        overrides: the same overrides; each run's training config is composed from them.
        command: the command line recorded in results.md.
    """
    return Comparison(cfg, overrides, command).execute()


main = Comparison.main


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
