#!/usr/bin/env python
"""`make bench`: training and separation speed of the presets, with their FLOPs.

Prints tables and writes JSON (default ``bench-<device>.json``). Sections:

* conv1d reference: forward + backward FLOP/s of a large conv1d of the kind the
  Wave-U-Net is made of, measured in the same run (the ceiling to compare with);
* training: one optimiser step (forward, loss, backward, Adam) per preset:
  supervised output samples per second, FLOPs per step (counted by
  ``torch.utils.flop_counter``), achieved FLOP/s and its ratio to the reference;
* separation: real-time factor and peak memory for a stereo song, big aligned
  chunks vs. the original way (16,389-sample output chunks, one at a time);
* scaling: cost per output sample as the chunk grows, and time / peak memory as
  the song grows.

Examples::

    python scripts/bench.py                          # CPU, all sections, ~minutes
    python scripts/bench.py --device cuda --precision fp32 bf16 --compile
    python scripts/bench.py --sections train --presets m5_highsr --batch 4
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from waveunet.experiments.base import machine_stamp
from waveunet.model.network import build_model
from waveunet.precision import TRAINING_PRECISIONS, autocast
from waveunet.reporting.format import number
from waveunet.reporting.format import table as format_table
from waveunet.settings.compose import compose

PRESETS = ["tiny", "m4", "m5_highsr", "m6"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Best (shortest) seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    The best run is the least disturbed by other work on a shared machine, for the
    reference conv1d and the training steps alike, so their ratio is comparable.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def model_for(preset: str, output_samples: int | None = None, compile_: bool = False):
    overrides = [f"model={preset}"]
    if output_samples:
        overrides.append(f"model.output_samples={output_samples}")
    cfg = compose("config", overrides)
    model = build_model(cfg.model, cfg.output)
    return model


# -- conv1d reference -------------------------------------------------------
def bench_conv_reference(device, precision, repeats) -> dict:
    """A large conv1d like the network's middle levels: 96 -> 120 channels, kernel 15."""
    batch, length = (4, 65536) if device.type == "cpu" else (16, 262144)
    conv = torch.nn.Conv1d(96, 120, 15).to(device)
    x = torch.randn(batch, 96, length, device=device, requires_grad=True)

    def step():
        with autocast(device, precision):
            y = conv(x)
        y.float().sum().backward()

    flops = count_flops(step)
    seconds = timed(step, device, repeats)
    return {"shape": f"({batch}, 96, {length}) * conv(96->120, k=15)", "flops": flops,
            "seconds": seconds, "flop_per_s": flops / seconds}


# -- training ---------------------------------------------------------------
def bench_train(preset, device, precision, batch, output_samples, repeats, compile_) -> dict:
    model = model_for(preset, output_samples).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # as the trainer
    channels, sources = model.config.channels, len(model.sources)
    mixture = torch.rand(batch, channels, model.input_samples, device=device) * 2 - 1
    targets = torch.rand(batch, sources, channels, model.output_samples, device=device) * 2 - 1
    network = torch.compile(model) if compile_ else model

    def step():
        with autocast(device, precision):
            out = network(mixture)
        loss = F.mse_loss(out.estimates.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    flops = (
        count_flops(step)
        if not compile_
        else count_flops(lambda: _eager_step(model, mixture, targets))
    )
    seconds = timed(step, device, repeats, warmup=2 if compile_ else 1)
    supervised = batch * model.output_samples
    return {
        "preset": preset, "precision": precision, "compile": compile_, "batch": batch,
        "input_samples": model.input_samples, "output_samples": model.output_samples,
        "step_seconds": seconds, "flops_per_step": flops, "flop_per_s": flops / seconds,
        "output_samples_per_s": supervised / seconds,
        "output_seconds_per_s": supervised / seconds / model.sample_rate_hz,
    }


def _eager_step(model, mixture, targets):
    out = model(mixture)
    F.mse_loss(out.estimates, targets).backward()
    model.zero_grad(set_to_none=True)


# -- separation -------------------------------------------------------------
def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux: VmHWM).

    Not ``getrusage().ru_maxrss``: Linux carries the parent's peak into a forked
    child, so every child would report the benchmark driver's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_separate(preset, device, precision, song_seconds, original_way: bool, chunk=None,
                   file_to_file: bool = False) -> dict:
    """Separate a random stereo song at the model's rate; peak memory in a fresh subprocess.

    ``file_to_file``: through the streaming path ``waveunet separate`` uses (a WAV
    written first, stems written to WAVs), instead of the in-memory array API.
    """
    import subprocess

    mode = "file" if file_to_file else ("1" if original_way else "0")
    args = [sys.executable, __file__, "--_separate-child", preset, str(device), precision,
            str(song_seconds), mode, str(chunk or 0)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write_random_song(path: Path, channels: int, frames: int, rate: int) -> None:
    """A random song written block by block, so the writing does not set the peak RSS."""
    import soundfile as sf

    gen = torch.Generator().manual_seed(0)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=channels, subtype="PCM_16") as f:
        for start in range(0, frames, 2**18):
            n = min(2**18, frames - start)
            f.write((torch.rand(n, channels, generator=gen) * 2 - 1).numpy())


def _separate_child(preset, device, precision, song_seconds, mode, chunk) -> None:
    import tempfile

    from waveunet.separation.inference import Separator

    original_way, file_to_file = mode == "1", mode == "file"
    device = torch.device(device)
    model = model_for(preset).to(device).eval()
    rate = model.sample_rate_hz
    frames = int(song_seconds * rate)
    if original_way:  # the original code: one model-sized output chunk at a time
        separator = Separator(model, device=device, chunk_output_samples=model.output_samples,
                              batch_size=1, precision=precision)
    else:
        separator = Separator(model, device=device, chunk_output_samples=chunk or None,
                              precision=precision)
    with tempfile.TemporaryDirectory(prefix="waveunet-bench-") as tmp:
        if file_to_file:
            song_path = Path(tmp) / "song.wav"
            _write_random_song(song_path, model.config.channels, frames, rate)
            targets = [Path(tmp) / "out" / f"{s}.wav" for s in separator.sources]
        else:
            song = torch.rand(model.config.channels, frames) * 2 - 1
        gc.collect()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        base_peak, base_rss = peak_rss_bytes(), current_rss_bytes()
        start = time.perf_counter()
        if file_to_file:
            separator.separate_file(song_path, targets)
            shape = [len(separator.sources), model.config.channels, frames]
        else:
            shape = list(separator.separate_tensor(song).stems.shape)
        sync(device)
        seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    record = {
        "preset": preset, "precision": precision, "original_way": original_way,
        "file_to_file": file_to_file,
        "song_seconds": song_seconds, "seconds": seconds, "rtf": seconds / song_seconds,
        "chunk_output_samples": separator.step_samples, "peak_rss_bytes": peak,
        "rss_before_bytes": base_rss, "peak_rss_before_bytes": base_peak,
        "peak_rss_growth_bytes": peak - base_rss, "stems_shape": shape,
    }
    if device.type == "cuda":
        record["peak_cuda_bytes"] = torch.cuda.max_memory_allocated(device)
    print(json.dumps(record))


# -- separation precision: auto against fp32 --------------------------------------
# Issue 12's CPU target: the array API (tiling + model, no file I/O) of m5_highsr at most this
# many seconds per second of stereo audio on the 2-core development machine when it is quiet.
CPU_TARGET_S_PER_AUDIO_S = 0.11


def bench_precision(preset, device, song_seconds, repeats) -> dict:
    """``Separator.separate_tensor`` of a random stereo song at the model's rate, with
    ``precision='fp32'`` and ``'auto'`` alternated in one process (the same load for both):
    seconds per second of audio (best and median of ``repeats``) and auto's speed-up."""
    import statistics

    from waveunet.separation.inference import Separator

    load_before = os.getloadavg()[0]  # other work on the machine, before this section's own
    model = model_for(preset).to(device).eval()
    frames = int(song_seconds * model.sample_rate_hz)
    song = torch.rand(model.config.channels, frames, generator=torch.Generator().manual_seed(0))
    song = song * 2 - 1
    separators = {p: Separator(model, device=device, precision=p) for p in ("fp32", "auto")}
    times: dict[str, list[float]] = {p: [] for p in separators}
    for sep in separators.values():  # warm-up: one-off kernel set-up, not per song
        sep.separate_tensor(song[:, : min(frames, 2 * sep.step_samples)])
    for _ in range(repeats):
        for p, sep in separators.items():
            start = time.perf_counter()
            sep.separate_tensor(song)
            sync(device)
            times[p].append((time.perf_counter() - start) / song_seconds)
    median = {p: statistics.median(t) for p, t in times.items()}
    return {
        "preset": preset, "song_seconds": song_seconds, "repeats": repeats,
        "auto_is": separators["auto"].precision, "threads": torch.get_num_threads(),
        "chunk_output_samples": separators["auto"].step_samples,
        "fp32_s_per_audio_s": median["fp32"], "auto_s_per_audio_s": median["auto"],
        "fp32_best_s_per_audio_s": min(times["fp32"]),
        "auto_best_s_per_audio_s": min(times["auto"]),
        "auto_speedup": median["fp32"] / median["auto"],
        "target_s_per_audio_s": (CPU_TARGET_S_PER_AUDIO_S
                                 if device.type == "cpu" and preset == "m5_highsr" else None),
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
    }


# -- driver -----------------------------------------------------------------
INT = {"digits": 0}


def table(rows: list[dict], columns: list[tuple[str, str, dict | None]]) -> str:
    """A markdown table of ``rows``; a column is (title, key, :func:`number` options or None
    for text)."""
    return "\n".join(format_table(
        [title for title, _, _ in columns],
        [["" if row.get(key) is None else str(row[key]) if options is None
          else number(row[key], **options) for _, key, options in columns] for row in rows]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", default=PRESETS, choices=PRESETS)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=TRAINING_PRECISIONS)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd training")
    parser.add_argument("--sections", nargs="+",
                        default=["precision", "train", "separate", "scaling"],
                        choices=["precision", "train", "separate", "scaling"])
    parser.add_argument(
        "--batch", type=int, default=None, help="training batch (default: 2 on CPU, 16 on GPU)"
    )
    parser.add_argument(
        "--train-output-samples",
        type=int,
        nargs="+",
        default=[16384],
        help="training output lengths to time (longer crops: more supervised samples per FLOP)",
    )
    parser.add_argument("--song-seconds", type=float, default=180.0)
    parser.add_argument("--precision-song-seconds", type=float, default=60.0,
                        help="song length of the precision section (default 60)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--json", default=None, help="where to write the results (default bench-<device>.json)"
    )
    parser.add_argument("--_separate-child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._separate_child:
        preset, device, precision, seconds, original, chunk = args._separate_child
        _separate_child(preset, device, precision, float(seconds), original, int(chunk))
        return 0

    device = torch.device(args.device)
    batch = args.batch or (2 if device.type == "cpu" else 16)
    machine = {
        **machine_stamp(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
    }
    results: dict = {
        "machine": machine,
        "reference": [],
        "train": [],
        "separate": [],
        "scaling_chunk": [],
        "scaling_song": [],
        "precision": [],
    }
    print(f"# waveunet benchmark on {machine['device']} ({device}), torch {torch.__version__}, "
          f"{machine['torch_threads']} threads\n")

    if "precision" in args.sections:
        preset = "m5_highsr" if "m5_highsr" in args.presets else args.presets[0]
        row = bench_precision(preset, device, args.precision_song_seconds, args.repeats)
        results["precision"].append(row)
        target = row["target_s_per_audio_s"]
        print(f"## Separation precision ({preset}, array API: tiling + model, no file I/O)\n\n"
              f"{row['song_seconds']:.0f}-second stereo song, fp32 and auto (= {row['auto_is']})"
              f" alternated {row['repeats']} times in one process, {row['threads']} threads, "
              f"1-minute load average {row['load_average_1min_before']:.2f} before, "
              f"{row['load_average_1min_after']:.2f} after (its own threads count in it):\n")
        print(table([{**row, "precision": "fp32", "median": row["fp32_s_per_audio_s"],
                      "best": row["fp32_best_s_per_audio_s"]},
                     {**row, "precision": f"auto ({row['auto_is']})",
                      "median": row["auto_s_per_audio_s"], "best": row["auto_best_s_per_audio_s"]}],
                    [("precision", "precision", None),
                     ("s per s of audio (median)", "median", {"digits": 3}),
                     ("best", "best", {"digits": 3})]))
        verdict = ""
        if target is not None:
            met = row["auto_s_per_audio_s"] <= target
            verdict = (f"; target <= {target} s per s: {'met' if met else 'MISSED'} "
                       f"(median {row['auto_s_per_audio_s']:.3f})")
        print(f"\nauto is {row['auto_speedup']:.2f}x fp32 (target >= 1.4x: "
              f"{'met' if row['auto_speedup'] >= 1.4 else 'MISSED'}){verdict}\n")

    if "train" in args.sections:
        for precision in args.precision:
            ref = bench_conv_reference(device, precision, args.repeats)
            results["reference"].append({"precision": precision, **ref})
            print(
                f"conv1d reference ({precision}): {ref['flop_per_s'] / 1e9:.1f} GFLOP/s  "
                f"[{ref['shape']}]"
            )
            for preset in args.presets:
                for out_len in args.train_output_samples:
                    for compile_ in ([False, True] if args.compile else [False]):
                        row = bench_train(
                            preset, device, precision, batch, out_len, args.repeats, compile_
                        )
                        row["vs_conv_reference"] = row["flop_per_s"] / ref["flop_per_s"]
                        results["train"].append(row)
                        print(
                            f"  train {preset:9s} out {row['output_samples']:7d} {precision} "
                            f"{'compiled ' if compile_ else ''}: {row['step_seconds']:.3f} s/step, "
                            f"{row['output_samples_per_s']:.0f} samples/s, "
                            f"{row['flop_per_s'] / 1e9:.1f} GFLOP/s "
                            f"({row['vs_conv_reference']:.0%} of conv1d)"
                        )
        print("\n## Training (one optimiser step)\n")
        print(
            table(
                results["train"],
                [
                    ("preset", "preset", None),
                    ("precision", "precision", None),
                    ("compile", "compile", None),
                    ("batch", "batch", INT),
                    ("output samples", "output_samples", INT),
                    ("s / step", "step_seconds", {"digits": 3}),
                    ("GFLOP / step", "flops_per_step", {"digits": 3, "kind": "e"}),
                    (
                        "supervised samples / s",
                        "output_samples_per_s",
                        {"digits": 0, "grouping": True},
                    ),
                    ("achieved FLOP/s", "flop_per_s", {"digits": 3, "kind": "e"}),
                    ("of conv1d ref.", "vs_conv_reference", {"digits": 0, "kind": "%"}),
                ],
            )
        )

    if "separate" in args.sections:
        for precision in args.precision:
            for preset in [p for p in args.presets if p in ("m4", "m5_highsr")] or args.presets[:1]:
                for original in (True, False):
                    row = bench_separate(preset, device, precision, args.song_seconds, original)
                    results["separate"].append(row)
                    print(f"  separate {preset} {'original way' if original else 'big chunks'}: "
                          f"RTF {row['rtf']:.3f}, peak RSS {row['peak_rss_bytes'] / 2**30:.2f} GiB")
        print(f"\n## Separation of a {args.song_seconds:.0f}-second stereo song\n")
        print(
            table(
                results["separate"],
                [
                    ("preset", "preset", None),
                    ("precision", "precision", None),
                    ("original way", "original_way", None),
                    ("chunk (output samples)", "chunk_output_samples", INT),
                    ("seconds", "seconds", {"digits": 1}),
                    ("real-time factor", "rtf", {"digits": 3}),
                    ("peak RSS (bytes)", "peak_rss_bytes", {"digits": 0, "grouping": True}),
                ],
            )
        )

    if "scaling" in args.sections:
        preset = "m5_highsr" if "m5_highsr" in args.presets else args.presets[0]
        for chunk in (16384, 65536, 262144, 1048576, None):  # None: the default chunk
            row = bench_separate(preset, device, args.precision[0], 60.0, False, chunk)
            row["seconds_per_million_samples"] = row["seconds"] / (60.0 * 44100 / 1e6)
            results["scaling_chunk"].append(row)
        for seconds in (60.0, 180.0, 600.0):  # file to file, as `waveunet separate` runs
            results["scaling_song"].append(
                bench_separate(preset, device, args.precision[0], seconds, False, file_to_file=True)
            )
        print(f"\n## Scaling ({preset})\n\nChunk length (60-second song, array API):\n")
        print(
            table(
                results["scaling_chunk"],
                [
                    ("chunk (output samples)", "chunk_output_samples", INT),
                    ("seconds", "seconds", {"digits": 2}),
                    ("real-time factor", "rtf", {"digits": 3}),
                    ("peak RSS (bytes)", "peak_rss_bytes", {"digits": 0, "grouping": True}),
                ],
            )
        )
        print("\nSong length (default chunk, file to file as `waveunet separate`):\n")
        print(
            table(
                results["scaling_song"],
                [
                    ("song seconds", "song_seconds", {"digits": 0}),
                    ("seconds", "seconds", {"digits": 2}),
                    ("real-time factor", "rtf", {"digits": 3}),
                    ("peak RSS (bytes)", "peak_rss_bytes", {"digits": 0, "grouping": True}),
                    (
                        "RSS growth in separation (bytes)",
                        "peak_rss_growth_bytes",
                        {"digits": 0, "grouping": True},
                    ),
                ],
            )
        )

    out = Path(args.json or f"bench-{device.type}.json")
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out)
    print(f"\nwrote {out}")
    gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
