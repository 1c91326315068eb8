"""Benchmark: training examples per second from the decoded cache vs. decoding per example.

Not a test. Generates a synthetic MUSDB18-HQ-layout dataset (or uses --root),
then times the same kind of example (a crop of ``--input-samples`` samples of
every stem at ``--sample-rate``) three ways:

- cache: ``TrainingExamples`` over memory-mapped tracks, alone and through
  ``make_loader`` with worker processes;
- soundfile: ``soundfile.read(start=, frames=)`` of each stem WAV + resampling;
- musdb: ``.audio`` of each source of a ``.stem.mp4`` (one ffmpeg run per access).

    .venv/bin/python scripts/bench_data.py [--root DIR] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from omegaconf import OmegaConf

from waveunet.audio import resample
from waveunet.data import TrainingExamples, load_split, make_loader
from waveunet.data.synth import generate_dataset

STEMS = ["bass", "drums", "other", "vocals"]


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f} examples/s  ({1000 * seconds / count:7.2f} ms/example)"


def bench_cache(root: Path, cache: Path, args: argparse.Namespace) -> None:
    cfg = OmegaConf.create(
        {
            "name": "bench",
            "format": "musdb_hq",
            "root": str(root),
            "cache_dir": str(cache),
            "valid_tracks": [],
        }
    )
    start = time.perf_counter()
    tracks = load_split(cfg, "train", sample_rate_hz=args.sample_rate, channels=2, sources=STEMS)
    print(f"cache build: {len(tracks)} tracks in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    load_split(cfg, "train", sample_rate_hz=args.sample_rate, channels=2, sources=STEMS)
    print(f"cache reuse: {time.perf_counter() - start:.2f} s")
    ds = TrainingExamples(tracks, args.input_samples, args.examples, seed=0)
    start = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    print(f"cache, __getitem__ in-process:     {rate(len(ds), time.perf_counter() - start)}")
    for workers in args.workers:
        loader = make_loader(ds, args.batch_size, workers=workers, shuffle=False, seed=0)
        for epoch in range(2):  # the first epoch pays for starting the workers
            ds.set_epoch(epoch)
            start = time.perf_counter()
            count = sum(batch.shape[0] for batch in loader)
            elapsed = time.perf_counter() - start
        print(
            f"cache, DataLoader workers={workers}, batch {args.batch_size}: {rate(count, elapsed)}"
        )


def bench_soundfile(root: Path, args: argparse.Namespace) -> None:
    folders = sorted((root / "train").iterdir())
    rng = np.random.default_rng(0)
    native = sf.info(str(folders[0] / "mixture.wav")).samplerate
    frames = int(np.ceil(args.input_samples * native / args.sample_rate))
    count = max(args.examples // 4, 8)
    start = time.perf_counter()
    for _ in range(count):
        folder = folders[rng.integers(len(folders))]
        offset = int(rng.integers(sf.info(str(folder / "mixture.wav")).frames - frames))
        crops = [
            sf.read(str(folder / f"{s}.wav"), start=offset, frames=frames, dtype="float32")[0].T
            for s in STEMS
        ]
        resample(torch.from_numpy(np.stack(crops)), native, args.sample_rate)
    print(f"soundfile per example + resample:  {rate(count, time.perf_counter() - start)}")


def bench_musdb(root: Path, tmp: Path, args: argparse.Namespace) -> None:
    import musdb
    import stempeg

    stems_root = tmp / "stems"
    for folder in sorted((root / "train").iterdir())[:3]:
        audio = [
            sf.read(str(folder / f"{n}.wav"), dtype="float32")[0]
            for n in ("mixture", "drums", "bass", "other", "vocals")
        ]
        (stems_root / "train").mkdir(parents=True, exist_ok=True)
        stempeg.write_stems(
            str(stems_root / "train" / f"{folder.name}.stem.mp4"),
            np.stack(audio),
            sample_rate=44100,
            writer=stempeg.StreamsWriter(codec="aac", bitrate=256000),
        )
    db = musdb.DB(root=str(stems_root), subsets=["train"])
    rng = np.random.default_rng(0)
    seconds = args.input_samples / args.sample_rate
    count = 6
    start = time.perf_counter()
    for _ in range(count):
        track = db.tracks[rng.integers(len(db.tracks))]
        track.chunk_duration = seconds
        track.chunk_start = float(rng.uniform(0, track.duration - seconds))
        crops = [track.sources[s].audio.T for s in STEMS]
        resample(torch.from_numpy(np.stack(crops).astype(np.float32)), 44100, args.sample_rate)
    print(f"musdb .audio per example:          {rate(count, time.perf_counter() - start)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", type=Path, help="a MUSDB18-HQ-layout dataset (default: generate one)"
    )
    parser.add_argument("--tracks", type=int, default=6, help="generated training tracks")
    parser.add_argument("--seconds", type=float, default=30.0, help="generated track length")
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument(
        "--input-samples", type=int, default=147443, help="M4's input length at 22.05 kHz"
    )
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--skip-musdb", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # like a DataLoader worker; the model gets the other cores
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = args.root
        if root is None:
            start = time.perf_counter()
            root = generate_dataset(
                tmp / "synth", tracks=args.tracks, seconds=args.seconds, seed=0, test_tracks=1
            )
            print(
                f"generated {args.tracks} x {args.seconds:.0f} s tracks in "
                f"{time.perf_counter() - start:.1f} s"
            )
        print(
            f"example: 4 stems x 2 channels x {args.input_samples} samples at "
            f"{args.sample_rate} Hz "
            f"({4 * 2 * 4 * args.input_samples / 2**20:.1f} MiB float32)"
        )
        bench_cache(root, tmp / "cache", args)
        bench_soundfile(root, args)
        if not args.skip_musdb:
            bench_musdb(root, tmp, args)


if __name__ == "__main__":
    main()
