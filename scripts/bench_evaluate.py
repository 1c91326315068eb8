#!/usr/bin/env python
"""Time `waveunet evaluate` per minute of stereo 44.1 kHz audio: SDR-only vs full BSSEval.

Generates a test split (``--tracks`` x ``--seconds``, MUSDB18-HQ layout) in a temporary
folder, then runs :func:`waveunet.evaluation.evaluate.evaluate`:

* ``estimates=DIR`` (the mixture as every estimate): metrics only, for the voice task
  (vocals, accompaniment) and the 4-source task (vocals, drums, bass, other);
* ``checkpoint=...`` of an untrained ``--model`` preset (default tiny): separation + metrics.

Each run's wall time (whole evaluation, including loading and the report) is printed per
minute of audio.

    python scripts/bench_evaluate.py [--tracks 2] [--seconds 30] [--workers N] [--skip-bss]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from waveunet.data.synth import generate_dataset
from waveunet.evaluation.evaluate import evaluate
from waveunet.model.checkpoint import save_checkpoint
from waveunet.model.network import build_model
from waveunet.settings.compose import compose

VOICE = ("vocals", "accompaniment")
FOUR = ("vocals", "drums", "bass", "other")


def _estimates_dir(root: Path, out: Path, sources: tuple[str, ...]) -> Path:
    for track in sorted((root / "test").iterdir()):
        (out / track.name).mkdir(parents=True, exist_ok=True)
        for s in sources:
            shutil.copy(track / "mixture.wav", out / track.name / f"{s}.wav")
    return out


def _run(label: str, base: list[str], overrides: list[str], out: Path) -> None:
    t0 = time.perf_counter()
    summary = evaluate(compose("evaluate", [*base, *overrides, f"out_dir={out}"]))
    wall = time.perf_counter() - t0
    minutes = summary["meta"]["audio_seconds"] / 60.0
    timing = summary["meta"]["timing"]
    detail = ", ".join(f"{k} {v:.2f}" for k, v in timing.items() if k.endswith("_s"))
    print(f"{label:<44} {wall / minutes:8.2f} s per minute of audio  ({detail})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=None, help="museval worker processes")
    parser.add_argument("--model", default="tiny", help="model preset of the checkpoint run")
    parser.add_argument("--skip-bss", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CUDA {'yes' if torch.cuda.is_available() else 'no'}; "
          f"{args.tracks} tracks x {args.seconds:g} s stereo 44.1 kHz")
    with tempfile.TemporaryDirectory(prefix="bench_evaluate-") as tmp_name:
        tmp = Path(tmp_name)
        root = generate_dataset(tmp / "dataset", tracks=1, seconds=args.seconds, seed=0,
                                test_tracks=args.tracks)
        base = ["data=musdb_hq", f"data.root={root}", f"data.cache_dir={tmp / 'cache'}",
                "progress=false"]
        if args.workers is not None:
            base.append(f"workers={args.workers}")
        cfg = compose("config", [f"model={args.model}"])
        ckpt = save_checkpoint(tmp / "run" / "best.pt", build_model(cfg.model, cfg.output))
        runs = []
        for sources in (VOICE, FOUR):
            est = _estimates_dir(root, tmp / f"est{len(sources)}", sources)
            spec = f"sources=[{','.join(sources)}]"
            for metrics in ("sdr", "bss"):
                runs.append((f"estimates, {len(sources)} sources, metrics={metrics}",
                             [f"estimates={est}", spec, f"metrics={metrics}"]))
        for metrics in ("sdr", "bss"):
            runs.append((f"checkpoint ({args.model}), 2 sources, metrics={metrics}",
                         [f"checkpoint={ckpt}", f"metrics={metrics}"]))
        # warm-up: dataset decode into the cache, first torch/torchaudio calls
        _run("(warm-up, not a measurement)", base, runs[0][1], tmp / "warmup")
        for i, (label, overrides) in enumerate(runs):
            if args.skip_bss and "metrics=bss" in overrides:
                continue
            _run(label, base, overrides, tmp / f"out{i}")


if __name__ == "__main__":
    main()
