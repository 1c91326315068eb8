"""``waveunet separate``: separate users' songs into stems with a trained checkpoint.

Conventional flags, like the ``demucs`` and ``umx`` commands::

    waveunet separate song.mp3 other.flac -c runs/m4/best.pt -o separated --format flac

Writes ``OUTDIR/<song name>/<source>.<ext>`` at each song's own sample rate,
channel count and length. The checkpoint describes its model, so no
hyper-parameters are repeated here. Existing stems are kept unless ``--force``;
a song is streamed in blocks (memory does not grow with its length), its stems
are written to temporary files renamed into place only when all are complete,
and a song that fails (unreadable, or whose
stems already exist) is reported while the others still separate; the exit
status is then 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import ExamplesHelpFormatter
from .errors import ConfigError, DataError, WaveUNetError
from .inference import GIB, Separator, load_model

SUBTYPES = {
    ("wav", "16"): "PCM_16",
    ("wav", "24"): "PCM_24",
    ("wav", "32f"): "FLOAT",
    ("flac", "16"): "PCM_16",
    ("flac", "24"): "PCM_24",
}


EXAMPLES = """examples:
  waveunet separate song.mp3 other.flac -c runs/<name>/<stamp>/best.pt -o separated
  waveunet separate live.m4a -c best.pt -d cuda --format flac --bits 24
  waveunet separate DATA/test/*/mixture.wav -c best.pt -o separated -q"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="waveunet separate", epilog=EXAMPLES,
        formatter_class=ExamplesHelpFormatter,
        description="Separate songs into stems with a trained Wave-U-Net checkpoint. "
        "Reads WAV, FLAC, OGG, MP3 and (through ffmpeg) M4A/MP4 at any sample rate "
        "and channel count; stems come back at the song's rate, channels and length.",
    )
    p.add_argument("songs", nargs="+", metavar="SONG", help="audio file(s) to separate")
    p.add_argument("-c", "--checkpoint", required=True,
                   help="checkpoint file (or a run folder holding best.pt / last.pt)")
    p.add_argument("-o", "--out", default="separated", metavar="OUTDIR",
                   help="output folder; stems go to OUTDIR/<song name>/<source>.<ext> "
                   "(default: %(default)s)")
    p.add_argument("-d", "--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: CUDA when available (default: %(default)s)")
    p.add_argument("--format", default="wav", choices=("wav", "flac"),
                   help="output format (default: %(default)s)")
    p.add_argument("--bits", default="16", choices=("16", "24", "32f"),
                   help="sample format: 16- or 24-bit PCM, or 32-bit float (WAV only) "
                   "(default: %(default)s)")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="chunks per forward pass (default: 4 on a GPU, 1 on the CPU)")
    p.add_argument("--chunk-seconds", type=float, default=None, metavar="S",
                   help="output seconds per chunk (default: the longest chunk that fits "
                   "--memory-gib, at most 2**18 samples on the CPU and 2**22 on a GPU)")
    p.add_argument("--memory-gib", type=float, default=None, metavar="G",
                   help="activation memory budget that sets the chunk length "
                   "(default: 2 on the CPU, 75%% of the GPU's memory)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing stems")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars and no per-stem clipping report")
    return p


def _subtype(fmt: str, bits: str) -> str:
    try:
        return SUBTYPES[(fmt, bits)]
    except KeyError:
        raise ConfigError(f"--bits {bits} is not available for --format {fmt} "
                          "(FLAC stores 16- or 24-bit integers)") from None


def format_clip_report(report: dict[str, dict], bounds) -> list[str]:
    """One line per stem: samples clipped to the bounds, and how far the raw output overshot."""
    low, high = bounds
    span = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
    lines = []
    for name, r in report.items():
        line = (f"  {name}: {r['clipped_count']} samples ({100 * r['fraction_clipped']:.3f}%) "
                f"at the output bounds {span}")
        if r["overshoot_count"]:
            line += (f"; raw output beyond them on {r['overshoot_count']} samples "
                     f"({100 * r['fraction_overshoot']:.3f}%), by up to {r['overshoot_max']:.4f} "
                     f"(mean {r['overshoot_mean']:.4f})")
        lines.append(line)
    return lines


def separate_song(
    separator: Separator,
    song: Path,
    out_dir: Path,
    *,
    ext: str,
    subtype: str,
    force: bool,
    verbose: bool,
) -> list[Path]:
    """Separate one file into ``out_dir/<source>.<ext>``; DataError if it cannot."""
    targets = [out_dir / f"{name}.{ext}" for name in separator.sources]
    if song.is_dir():
        raise DataError(f"{song}: is a directory, not an audio file")
    # An existing target is refused by separate_file (unless force), before any work.
    # Streamed file to file (waveunet.streaming): memory does not grow with the song's
    # length. Stems go to temporaries renamed into place only once all are complete.
    done = separator.separate_file(song, targets, subtype=subtype, overwrite=force,
                                   desc=song.name)
    written = done.paths
    if verbose:
        print(f"{song} -> {out_dir}/ ({done.channels} ch, {done.sample_rate_hz} Hz, "
              f"{done.frames / done.sample_rate_hz:.1f} s)")
        for line in format_clip_report(done.clip_report, done.bounds):
            print(line)
    return written


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    subtype = _subtype(args.format, args.bits)
    if args.batch is not None and args.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {args.batch}")
    if args.memory_gib is not None and args.memory_gib <= 0:
        raise ConfigError(f"--memory-gib must be > 0, got {args.memory_gib}")
    if args.chunk_seconds is not None and args.chunk_seconds <= 0:
        raise ConfigError(f"--chunk-seconds must be > 0, got {args.chunk_seconds}")

    model = load_model(args.checkpoint, "cpu")
    chunk_samples = None
    if args.chunk_seconds is not None:
        chunk_samples = max(1, round(args.chunk_seconds * model.sample_rate_hz))
    separator = Separator(
        model,
        device=args.device,
        chunk_output_samples=chunk_samples,
        batch_size=args.batch,
        memory_budget_bytes=None if args.memory_gib is None else int(args.memory_gib * GIB),
        progress=not args.quiet,
    )
    out_root = Path(args.out)
    failures: list[str] = []
    used: dict[Path, Path] = {}
    for name in args.songs:
        song = Path(name)
        out_dir = out_root / song.stem
        try:
            if out_dir in used:
                raise DataError(f"{song}: same output folder {out_dir} as {used[out_dir]} "
                                "(rename one of them)")
            used[out_dir] = song
            separate_song(separator, song, out_dir, ext=args.format, subtype=subtype,
                          force=args.force, verbose=not args.quiet)
        except (WaveUNetError, OSError) as exc:
            message = str(exc) if str(song) in str(exc) else f"{song}: {exc}"
            print(f"waveunet separate: error: {message}", file=sys.stderr)
            failures.append(str(song))
    if failures:
        print(f"waveunet separate: {len(failures)} of {len(args.songs)} song(s) failed: "
              f"{', '.join(failures)}", file=sys.stderr)
        return 1
    return 0
