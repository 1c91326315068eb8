"""Benchmark (not a test): real-time factor and peak memory of ``waveunet separate`` here.

For each preset, a fresh process builds the model from the configs (untrained
weights: the speed does not depend on them), separates a generated stereo song
at 44.1 kHz through ``Separator.separate`` (resampling, tiling, batching, back
to the song's rate), and reports:

* RTF = separation wall time / song duration (< 1: faster than real time);
* peak RSS of the process, and its growth during separation over the model and
  the song already loaded (``ru_maxrss``; on Linux the allocator returns large
  blocks to the system, so this follows the tensors' peak);
* the chunk the memory budget chose and the estimate for it.

``--check-memory`` instead compares ``estimate_activation_bytes`` with the
measured peak growth of single forward passes at several chunk sizes.

    python scripts/bench_separate.py                      # m5_highsr and m4, 3-minute song
    python scripts/bench_separate.py --models m4 --seconds 30 --batch 4
    python scripts/bench_separate.py --check-memory
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build(preset: str):
    from waveunet.model.network import build_model
    from waveunet.settings.compose import compose

    cfg = compose("config", [f"model={preset}"])
    return build_model(cfg.model, cfg.output).eval()


def worker_separate(args) -> dict:
    import numpy as np
    import torch

    from waveunet.separation.inference import GIB, Separator, estimate_activation_bytes

    torch.manual_seed(0)
    model = build(args.worker)
    rate = 44100
    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * rate)) / rate
    song = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)])
    song = (song + 0.05 * rng.standard_normal(song.shape)).astype(np.float32)
    budget = None if args.memory_gib is None else int(args.memory_gib * GIB)
    sep = Separator(model, device="cpu", batch_size=args.batch, memory_budget_bytes=budget,
                    chunk_output_samples=args.chunk_samples, progress=args.progress)
    with torch.inference_mode():  # warm-up: one-off kernel setup, not per song
        model(torch.zeros(1, model.config.channels, model.input_samples))
    plan = sep.plan(round(args.seconds * model.sample_rate_hz))
    before = rss_peak_bytes()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    result = sep.separate(song, rate)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    peak = rss_peak_bytes()
    assert result.stems.shape == (2, 2, song.shape[1])
    return {
        "model": args.worker,
        "threads": torch.get_num_threads(),
        "song_seconds": args.seconds,
        "model_rate_hz": model.sample_rate_hz,
        "batch_size": sep.batch_size,
        "memory_budget_gib": sep.memory_budget_bytes / GIB,
        "chunk_output_samples": plan.output_samples,
        "chunk_input_samples": plan.input_samples,
        "step_samples": plan.step_samples,
        "chunks": plan.num_chunks,
        "estimated_activation_gib": estimate_activation_bytes(
            model, plan.output_samples, sep.batch_size) / GIB,
        "wall_seconds": wall,
        "rtf": wall / args.seconds,
        # CPU time of this process: with other load on the machine, wall time
        # grows but this does not (cpu_seconds / threads ~ wall time when idle)
        "cpu_seconds": cpu,
        "peak_rss_gib": peak / GIB,
        "peak_growth_gib": (peak - before) / GIB,
    }


def worker_forward(args) -> dict:
    import torch

    from waveunet.separation.inference import GIB, estimate_activation_bytes

    model = build(args.worker)
    n_out = model.output_samples_for(args.chunk_samples)
    x = torch.randn(args.batch or 1, model.config.channels, model.input_samples_for(n_out))
    with torch.inference_mode():
        model(torch.zeros(1, model.config.channels, model.input_samples))
        before = rss_peak_bytes()
        model(x)
    measured = rss_peak_bytes() - before
    estimate = estimate_activation_bytes(model, n_out, args.batch or 1)
    input_bytes = x.numel() * 4  # allocated before the measurement, counted by the estimate
    return {"model": args.worker, "batch": args.batch or 1, "output_samples": n_out,
            "estimate_gib": estimate / GIB, "measured_gib": (measured + input_bytes) / GIB,
            "estimate/measured": estimate / (measured + input_bytes)}


def spawn(extra: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({' '.join(extra)}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["m5_highsr", "m4"])
    p.add_argument("--seconds", type=float, default=180.0, help="song length (default 180)")
    p.add_argument("--batch", type=int, default=None, help="default: the Separator's (1 on CPU)")
    p.add_argument("--memory-gib", type=float, default=None, help="default: the Separator's (2)")
    p.add_argument("--chunk-samples", type=int, default=None, help="fix the output chunk instead")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--check-memory", action="store_true",
                   help="compare the activation memory estimate with measured forward passes")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--forward", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        print(json.dumps(worker_forward(args) if args.forward else worker_separate(args)))
        return 0

    common = []
    if args.batch is not None:
        common += ["--batch", str(args.batch)]
    if args.check_memory:
        for model in args.models:
            for chunk, batch in [(65536, 1), (262144, 1), (1048576, 1), (262144, 4)]:
                r = spawn(["--worker", model, "--forward", "--chunk-samples", str(chunk),
                           "--batch", str(batch)])
                print(json.dumps(r))
        return 0
    if args.memory_gib is not None:
        common += ["--memory-gib", str(args.memory_gib)]
    if args.chunk_samples is not None:
        common += ["--chunk-samples", str(args.chunk_samples)]
    if args.progress:
        common += ["--progress"]
    for model in args.models:
        r = spawn(["--worker", model, "--seconds", str(args.seconds), *common])
        print(json.dumps(r))
        print(f"{model}: RTF {r['rtf']:.3f} ({r['wall_seconds']:.1f} s for {args.seconds:g} s, "
              f"{r['cpu_seconds']:.1f} CPU s on {r['threads']} threads), "
              f"peak RSS {r['peak_rss_gib']:.2f} GiB (+{r['peak_growth_gib']:.2f} GiB while "
              f"separating), chunk {r['chunk_output_samples']} output samples x batch "
              f"{r['batch_size']} ({r['chunks']} chunks, estimate "
              f"{r['estimated_activation_gib']:.2f} GiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
