"""``waveunet separate``: separate users' songs into stems with a trained checkpoint.

Conventional flags, like the ``demucs`` and ``umx`` commands::

    waveunet separate song.mp3 album/ -c runs/m4/<stamp>/best.pt -o separated --format flac

Writes ``OUTDIR/<model name>/<track>/<stem>.<ext>`` (:mod:`waveunet.separation.layout`: the names,
the ``--filename`` template, folders as input) at each song's own sample rate, channel count and
length. The checkpoint describes its model, so no hyper-parameters are repeated here. Songs go
through :mod:`waveunet.separation.pipeline`: decoding, the model and the writing of stems overlap,
and memory does not grow with a song's length. Existing stems, stems of another format or of another
checkpoint under the same model name are kept unless ``--force``; an input song is never
overwritten. Stems are written to pid-tagged temporaries renamed into place when all of a song's are
complete. A song that fails (unreadable, cut short, disk full, or whose stems exist) is reported in
one line while the others still separate; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..commands import ExamplesHelpFormatter
from ..errors import ConfigError, DataError, WaveUNetError
from ..precision import PRECISIONS

SUBTYPES = {
    ("wav", "16"): "PCM_16",
    ("wav", "24"): "PCM_24",
    ("wav", "32f"): "FLOAT",
    ("flac", "16"): "PCM_16",
    ("flac", "24"): "PCM_24",
}
FORMATS = ("wav", "flac", "mp3")

EXAMPLES = """examples:
  waveunet separate song.mp3 album/ -c runs/<name>/<stamp>/best.pt -o separated
      -> separated/<model name>/<track>/{accompaniment,vocals}.wav
  waveunet separate data/test -c best.pt -o out      (a dataset folder: its mixture.* files)
  waveunet separate live.m4a -c best.pt -d cuda:1 --format flac --bits 24 --stems vocals
  waveunet separate song.wav -c best.pt --format mp3 --mp3-quality 0 \\
      --filename '{model}/{track}_{stem}.{ext}'
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="waveunet separate", epilog=EXAMPLES,
        formatter_class=ExamplesHelpFormatter,
        description="Separate songs into stems with a trained Wave-U-Net checkpoint. "
        "Reads WAV, FLAC, OGG, MP3 and (through ffmpeg) M4A/MP4 at any sample rate "
        "and channel count; stems come back at the song's rate, channels and length.",
    )
    p.add_argument("songs", nargs="+", metavar="SONG",
                   help="audio file(s), or folders: the audio files under them (in a "
                   "dataset folder, its mixture.* files)")
    p.add_argument("-c", "--checkpoint", required=True,
                   help="checkpoint file (or a run folder holding best.pt / last.pt)")
    p.add_argument("-o", "--out", default="separated", metavar="OUTDIR",
                   help="output folder (default: %(default)s)")
    p.add_argument("-n", "--name", default=None,
                   help="model name: the folder under OUTDIR (default: the run's name, plus "
                   "-<checkpoint file stem> when it is not best.pt)")
    p.add_argument("--filename", default=None, metavar="TEMPLATE",
                   help="where each stem goes under OUTDIR, from {model}, {track}, {parent}, "
                   "{stem}, {ext} (default: {model}/{track}/{stem}.{ext})")
    p.add_argument("--stems", default=None, metavar="NAMES",
                   help="comma-separated sources to write (default: all of the model's)")
    p.add_argument("-d", "--device", default="auto",
                   help="auto (CUDA when available), cpu, cuda, cuda:N or another torch device "
                   "this machine has, e.g. mps "
                   "(default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="the network's precision; auto: bf16 on CUDA and on CPUs with native "
                   "bf16 (avx512_bf16/amx_bf16), else fp32 (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's, one per core); 1 when other "
                   "programs keep the cores busy")
    p.add_argument("--format", default="wav", choices=FORMATS,
                   help="output format (default: %(default)s)")
    p.add_argument("--bits", default="16", choices=("16", "24", "32f"),
                   help="sample format: 16- or 24-bit PCM, or 32-bit float (WAV only) "
                   "(default: %(default)s)")
    p.add_argument("--mp3-quality", type=float, default=2.0, metavar="V",
                   help="MP3 variable-bitrate quality, LAME's -V scale: 0 (best, largest) to 9 "
                   "(default: %(default)g); MP3 stores songs of up to 48 kHz, a faster song "
                   "is refused")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="chunks per forward pass (default: 4 on a GPU, 1 on the CPU)")
    p.add_argument("--chunk-seconds", type=float, default=None, metavar="S",
                   help="output seconds per chunk (default: the longest chunk that fits "
                   "--memory-gib, at most 2**18 samples on the CPU and 2**22 on a GPU)")
    p.add_argument("--memory-gib", type=float, default=None, metavar="G",
                   help="activation memory budget that sets the chunk length "
                   "(default: 2 on the CPU, 75%% of the GPU's memory)")
    p.add_argument("-f", "--force", action="store_true",
                   help="overwrite existing stems (and remove an earlier run's stems of "
                   "another format); never an input song")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars and no per-stem clipping report")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print the full detail of errors (e.g. what ffmpeg said)")
    return p


def _subtype(fmt: str, bits: str) -> str | None:
    if fmt == "mp3":
        return None
    try:
        return SUBTYPES[(fmt, bits)]
    except KeyError:
        raise ConfigError(f"--bits {bits} is not available for --format {fmt} "
                          "(FLAC stores 16- or 24-bit integers)") from None


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value in (("--memory-gib", args.memory_gib), ("--chunk-seconds", args.chunk_seconds)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{flag} must be a finite number > 0, got {value}")
    if args.batch is not None and args.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {args.batch}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if not (math.isfinite(args.mp3_quality) and 0 <= args.mp3_quality <= 9):
        raise ConfigError(f"--mp3-quality must be between 0 and 9, got {args.mp3_quality}")


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


def _chosen_stems(option: str | None, sources: tuple[str, ...]) -> list[str]:
    if option is None:
        return list(sources)
    chosen = [s.strip() for s in option.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in sources]
    if unknown or not chosen:
        raise ConfigError(f"--stems {option}: the model's sources are {', '.join(sources)}")
    return list(dict.fromkeys(chosen))


class Plan:
    """The songs and their targets, checked before any work (module docstring's rules)."""

    def __init__(self, args: argparse.Namespace, model: str, stems: list[str],
                 sources: tuple[str, ...]):
        from .layout import DEFAULT_TEMPLATE, check_template, expand_songs

        self.out_root = Path(args.out)
        self.template = args.filename or DEFAULT_TEMPLATE
        check_template(self.template)
        self.model, self.stems, self.ext, self.force = model, stems, args.format, args.force
        self.sources = sources  # all of the model's, whichever --stems picks
        self.failures: list[tuple[str, BaseException]] = []
        songs: list[Path] = []
        for argument in args.songs:
            try:
                songs.extend(expand_songs([argument], self.out_root))
            except WaveUNetError as exc:
                self.failures.append((argument, exc))
        self.songs = songs
        self.inputs = {_resolved(s) for s in songs}
        self.jobs: list = []
        self.replaced: dict[Path, list[Path]] = {}  # song -> other-format stems to remove
        claimed: dict[Path, Path] = {}
        for song in songs:
            try:
                self.jobs.append(self._job(song, claimed))
            except ConfigError:  # the options themselves are wrong: nothing runs
                raise
            except WaveUNetError as exc:
                self.failures.append((str(song), exc))

    def _job(self, song: Path, claimed: dict[Path, Path]):
        from .layout import other_format_stems, render, track_name
        from .pipeline import Job

        if song.is_dir():
            raise DataError(f"{song}: is a directory, not an audio file")
        root = _resolved(self.out_root)
        targets = {}
        for stem in self.stems:
            target = self.out_root / render(self.template, model=self.model, song=song,
                                            stem=stem, ext=self.ext)
            resolved = _resolved(target)
            if root not in resolved.parents:
                raise DataError(f"{song}: its stem {target} would be outside {self.out_root}")
            if resolved in self.inputs:
                raise DataError(f"{song}: its stem {target} would overwrite an input song "
                                "(choose another -o or --filename)")
            if resolved in claimed:
                raise DataError(f"{song}: same output file {target} as {claimed[resolved]} "
                                "(rename one of them, or use --filename with {parent})")
            mine = [s for s, t in targets.items() if _resolved(t) == resolved]
            if mine:
                raise ConfigError(f"--filename {self.template!r}: the stems {mine[0]} and "
                                  f"{stem} of {song} would both be {target} (use {{stem}})")
            if target.exists() and not self.force:
                raise DataError(f"refusing to overwrite existing file {target} "
                                "(to replace it: --force)")
            targets[stem] = target
        # Every source of the model, not only those written now: vocals.flac of an earlier
        # --stems vocals run must not stay beside this run's accompaniment.wav.
        others = list(dict.fromkeys(
            p for source in self.sources
            for p in other_format_stems(self.out_root / render(
                self.template, model=self.model, song=song, stem=source, ext=self.ext))
            if _resolved(p) not in self.inputs))
        if others and not self.force:
            raise DataError(f"{song}: {others[0]} is there from an earlier run; stems in "
                            f"another format would mix with it (--force replaces it)")
        self.replaced[song] = others
        for target in targets.values():
            claimed[_resolved(target)] = song
        return Job(song, targets, desc=track_name(song))


def _resolved(path: Path) -> Path:
    return Path(path).expanduser().resolve()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    subtype = _subtype(args.format, args.bits)
    _check_numbers(args)
    from ..devices import thread_scope

    with thread_scope(args.threads):
        return _separate(args, subtype)


def _separate(args: argparse.Namespace, subtype: str) -> int:
    from ..devices import resolve_device
    from ..model.checkpoint import load_checkpoint, model_from_checkpoint
    from .inference import GIB, Separator
    from .layout import (
        check_model_name,
        model_name,
        record_model_name,
        sweep_stale_temporaries,
    )
    from .pipeline import separate_files

    device = resolve_device(args.device, setting="-d/--device")
    payload = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(payload, "cpu")
    name = args.name or model_name(Path(payload["path"]), payload.get("config"))
    from ..files import safe_path_component

    name = safe_path_component(name)
    stems = _chosen_stems(args.stems, tuple(model.sources))
    chunk_samples = None
    if args.chunk_seconds is not None:
        chunk_samples = max(1, round(args.chunk_seconds * model.sample_rate_hz))
    separator = Separator(
        model,
        device=device,
        chunk_output_samples=chunk_samples,
        batch_size=args.batch,
        memory_budget_bytes=None if args.memory_gib is None else int(args.memory_gib * GIB),
        progress=not args.quiet,
        precision=args.precision,
    )
    separator.origin = str(payload["path"])  # error messages name the checkpoint
    # Another checkpoint under this name: refused before anything else is looked at.
    manifest = check_model_name(Path(args.out), name, Path(payload["path"]), args.force)
    plan = Plan(args, name, stems, tuple(model.sources))
    # A killed run's temporaries, wherever this run may write (not only the folders it does).
    sweep_stale_temporaries(plan.out_root, name, plan.template)
    failures = list(plan.failures)
    for label, exc in plan.failures:
        _report_error(label, exc, args.verbose)
    succeeded = 0
    recorded = False
    if plan.jobs:

        def after_stems(song: Path) -> None:
            """Once a song's stems are in place: the manifest (with the first song), and the
            earlier run's stems in another format removed."""
            nonlocal recorded
            if not recorded:
                record_model_name(plan.out_root, manifest, name)
                recorded = True
            for stale in plan.replaced.get(song, []):
                stale.unlink(missing_ok=True)

        def done(outcome) -> None:
            nonlocal succeeded
            song, error = outcome.job.song, outcome.error
            if error is None:
                try:  # on the write stage's thread: a failure here fails this song alone
                    after_stems(song)
                except (WaveUNetError, OSError) as exc:
                    error = exc
            if error is not None:
                _report_error(str(song), error, args.verbose)
                failures.append((str(song), error))
                return
            succeeded += 1
            result = outcome.result
            if result.rate_note:
                _say(f"waveunet separate: note: {result.rate_note}", sys.stderr)
            if not args.quiet:
                folder = result.paths[0].parent
                _say(f"{song} -> {folder}/ ({result.channels} ch, {result.sample_rate_hz} Hz, "
                     f"{result.frames / result.sample_rate_hz:.1f} s)")
                for line in format_clip_report(result.clip_report, result.bounds):
                    _say(line)

        separate_files(separator, plan.jobs, subtype=subtype, overwrite=args.force,
                       compression_level=args.mp3_quality / 10 if args.format == "mp3" else None,
                       on_done=done)
    total = succeeded + len(failures)
    if not args.quiet and succeeded:
        print(f"separated {succeeded} of {total} song(s) with {name} ({separator.precision} on "
              f"{separator.device}) into {plan.out_root}")
    if failures:
        print(f"waveunet separate: {len(failures)} of {total} song(s) failed: "
              f"{', '.join(label for label, _ in failures)}", file=sys.stderr)
        return 1
    return 0


def _say(line: str, file=None) -> None:
    """Print a line without breaking a progress bar (stems are reported from the write
    stage's thread while the model's bar runs)."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=file or sys.stdout)


def _report_error(label: str, exc: BaseException, verbose: bool) -> None:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if label not in message:
        message = f"{label}: {message}"
    _say(f"waveunet separate: error: {message}", sys.stderr)
    detail = getattr(exc, "detail", None)
    if verbose and detail:
        for line in str(detail).splitlines():
            _say(f"    {line}", sys.stderr)
