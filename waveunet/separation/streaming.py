"""Separating a song file to stem files in bounded memory, whatever the song's length.

The array API (:meth:`Separator.separate`) holds the song, its resampled copy
and every stem whole. This module streams instead: the song is read in blocks
(``soundfile.SoundFile``), mixed to the model's channels, resampled block by
block to the model's rate, fed through the same tiling loop as the array API
(:meth:`Separator.iter_chunks`; a sliding window holds only the current chunks'
inputs), and the stems are resampled back block by block, brought to the song's
channels and clamped again by the separator's one rule (:meth:`Separator.back_to_song`),
and appended to one open output file per stem. This module does not import the
separator: :class:`StreamingSeparator` says what it needs of one. The stages are objects:
:class:`SongReader` (decode, mix, resample to the model's rate) and :class:`StemWriter` (resample
back, clamp, write to pid-tagged temporaries, rename into place all at once); :func:`separate_file`
runs them one after the other for one song, :mod:`waveunet.separation.pipeline` in threads for many.
The clipping report is accumulated block by block. Peak memory is the model's activations plus a few
blocks and chunks, independent of the song's length.

:class:`BlockResampler` reproduces ``torchaudio.functional.resample`` (the
default windowed-sinc filter) on a stream: the whole-signal function zero-pads
the signal by ``width`` samples on the left and ``width + orig`` on the right
(``orig``/``new`` being the gcd-reduced rates) and convolves the padded signal
with ``new`` polyphase filters of ``2 * width + orig`` taps at stride ``orig``;
output frame ``q`` (outputs ``q * new ... q * new + new - 1``) reads input
``[q * orig - width, q * orig + width + orig)``. The block resampler computes
exactly those frames from a buffer that keeps the last ``2 * width + orig``
samples, so its output equals the whole-signal result to float rounding,
including at both ends.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf
import torch

from ..audio import (
    MP3_RATES_HZ,
    check_not_existing,
    check_writable,
    convert_channels,
    decode_with_ffmpeg,
    ffmpeg_fallback_error,
    rate_change_note,
    tractable_rates,
    write_errors,
)
from ..errors import DataError
from ..files import FILE_MODE, remove_stale_temporaries, temporary_next_to
from ..metrics import bound_hits

DEFAULT_BLOCK_FRAMES = 2**16


class StreamingSeparator(Protocol):
    """What :func:`separate_file` needs of a :class:`waveunet.separation.inference.Separator`."""

    sources: tuple[str, ...]
    sample_rate_hz: int
    channels: int
    bounds: tuple[float, float | None]

    def iter_chunks(self, total: int, source: Any, desc: str | None = None, *,
                    check_finite: bool = False
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def back_to_song(self, stems: torch.Tensor, unclipped: torch.Tensor, channels: int,
                     resampled: bool) -> tuple[torch.Tensor, torch.Tensor]: ...


class BlockResampler:
    """``torchaudio.functional.resample`` of a signal that arrives in blocks.

    ``push`` blocks of (C, n) float32 in order, then call ``finish`` once; the
    concatenated outputs equal ``resample(whole_signal, orig_hz, new_hz)``
    (same length ``ceil(new * T / orig)``). Equal rates pass blocks through.
    """

    def __init__(self, orig_hz: int, new_hz: int, channels: int):
        # the same replacement of a ratio too large to compute as the whole-signal function
        orig_hz, new_hz = tractable_rates(orig_hz, new_hz)
        self.identity = int(orig_hz) == int(new_hz)
        self.channels = channels
        self.fed = 0
        self.emitted = 0
        self.finished = False
        if self.identity:
            return
        from torchaudio.functional.functional import _get_sinc_resample_kernel

        gcd = math.gcd(int(orig_hz), int(new_hz))
        self.orig, self.new = int(orig_hz) // gcd, int(new_hz) // gcd
        # the same kernel torchaudio builds for a float32 CPU waveform
        self.kernel, self.width = _get_sinc_resample_kernel(
            int(orig_hz), int(new_hz), gcd, device=torch.device("cpu"), dtype=torch.float32)
        self.buf = torch.zeros(channels, self.width)  # the left zero padding
        self.buf_start = -self.width  # song position of buf[:, 0]
        self.next_frame = 0

    def push(self, block: torch.Tensor) -> torch.Tensor:
        if self.finished:
            raise RuntimeError("push after finish")
        block = block.to(torch.float32)
        self.fed += block.shape[-1]
        if self.identity:
            self.emitted += block.shape[-1]
            return block
        self.buf = torch.cat([self.buf, block], dim=-1)
        return self._emit()

    def finish(self) -> torch.Tensor:
        """The outputs that need the zero padding past the signal's end."""
        if self.finished:
            raise RuntimeError("finish called twice")
        self.finished = True
        if self.identity:
            return torch.zeros(self.channels, 0)
        self.buf = torch.cat([self.buf, torch.zeros(self.channels, self.width + self.orig)], dim=-1)
        return self._emit()

    def _emit(self) -> torch.Tensor:
        end = self.buf_start + self.buf.shape[-1]
        q0 = self.next_frame
        q1 = (end - self.width - self.orig) // self.orig + 1  # frames whose input is all here
        if self.finished:
            q1 = min(q1, -(-self.fed // self.orig))  # ceil(T / orig) frames in all
        if q1 <= q0:
            return torch.zeros(self.channels, 0)
        a = q0 * self.orig - self.width - self.buf_start
        b = q1 * self.orig + self.width - self.buf_start
        y = torch.nn.functional.conv1d(self.buf[:, None, a:b], self.kernel, stride=self.orig)
        y = y.transpose(1, 2).reshape(self.channels, -1)
        if self.finished:
            target = -(-self.new * self.fed // self.orig)  # ceil(new * T / orig)
            y = y[:, :max(0, target - self.emitted)]
        self.emitted += y.shape[-1]
        self.next_frame = q1
        drop = q1 * self.orig - self.width - self.buf_start
        self.buf = self.buf[:, drop:].clone()
        self.buf_start += drop
        return y


def output_length(length: int, orig_hz: int, new_hz: int) -> int:
    """Length of ``torchaudio.functional.resample`` of ``length`` samples."""
    if int(orig_hz) == int(new_hz):
        return length
    gcd = math.gcd(int(orig_hz), int(new_hz))
    return -(-(int(new_hz) // gcd) * length // (int(orig_hz) // gcd))


class StreamWindow:
    """Model-rate input for the tiling loop, pulled from an iterator of (C, n) blocks.

    ``window(start, stop)`` returns song samples ``[start, stop)`` with zeros
    outside ``[0, total)``; ``start`` must not decrease between calls, and
    everything before it is dropped.
    """

    def __init__(self, blocks: Iterator[torch.Tensor], total: int, channels: int):
        self.blocks = blocks
        self.total = total
        self.channels = channels
        self.buf = torch.zeros(channels, 0)
        self.buf_start = 0
        self.exhausted = False

    def window(self, start: int, stop: int) -> torch.Tensor:
        if start < self.buf_start and start >= 0:
            raise RuntimeError("StreamWindow: windows must not move backwards")
        need = min(stop, self.total)
        pieces = [self.buf]
        have = self.buf_start + self.buf.shape[-1]
        while have < need and not self.exhausted:
            try:
                block = next(self.blocks)
            except StopIteration:
                self.exhausted = True
                break
            pieces.append(block)
            have += block.shape[-1]
        if len(pieces) > 1:
            self.buf = torch.cat(pieces, dim=-1)
        drop = max(0, min(start, have) - self.buf_start)
        if drop:
            self.buf = self.buf[:, drop:]
            self.buf_start += drop
        out = torch.zeros(self.channels, stop - start)
        lo, hi = max(start, self.buf_start), min(stop, have, self.total)
        if hi > lo:
            out[:, lo - start:hi - start] = self.buf[:, lo - self.buf_start:hi - self.buf_start]
        return out


class ClipAccumulator:
    """:func:`waveunet.metrics.bound_hits` summed over blocks: the report of the whole stems."""

    def __init__(self, sources: tuple[str, ...], low: float, high: float | None):
        self.sources, self.low, self.high = sources, low, high
        s = len(sources)
        self.n = 0
        self.clipped = [0] * s
        self.over_count = [0] * s
        self.over_sum = [0.0] * s
        self.over_max = [0.0] * s

    def add(self, stems: torch.Tensor, raw: torch.Tensor) -> None:
        if stems.shape[-1] == 0:
            return
        for i, h in enumerate(bound_hits(stems, raw, self.low, self.high)):
            self.clipped[i] += h["clipped_count"]
            k = h["overshoot_count"]
            if k:
                self.over_count[i] += k
                self.over_sum[i] += h["overshoot_mean"] * k
                self.over_max[i] = max(self.over_max[i], h["overshoot_max"])
        self.n += stems.shape[1] * stems.shape[2]

    def report(self) -> dict[str, dict[str, Any]]:
        n, out = self.n, {}
        for i, name in enumerate(self.sources):
            k = self.over_count[i]
            out[name] = {
                "n_samples": n, "clipped_count": self.clipped[i],
                "fraction_clipped": self.clipped[i] / n if n else 0.0,
                "overshoot_count": k, "fraction_overshoot": k / n if n else 0.0,
                "overshoot_mean": self.over_sum[i] / k if k else None,
                "overshoot_max": self.over_max[i] if k else None,
            }
        return out


@dataclass
class FileSeparation:
    """What :func:`separate_file` did: the stem files and the per-stem clipping report."""

    paths: list[Path]
    clip_report: dict[str, dict[str, Any]]
    channels: int
    sample_rate_hz: int
    frames: int
    bounds: tuple[float, float | None]
    # Set when the song's rate was treated as a close one (waveunet.audio.tractable_rates).
    rate_note: str | None = None


def open_song(path: Path, stack: ExitStack) -> sf.SoundFile:
    """Open a song for block reading; containers libsndfile cannot read go through ffmpeg."""
    if not path.is_file():
        raise DataError(f"audio file not found: {path}")
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as sf_exc:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="waveunet-decode-"))
        try:
            f = sf.SoundFile(str(decode_with_ffmpeg(path, folder)))
        except (DataError, sf.LibsndfileError, RuntimeError) as ff_exc:
            raise ffmpeg_fallback_error(path, sf_exc, ff_exc) from sf_exc
    stack.enter_context(f)
    if f.frames <= 0:
        raise DataError(f"audio file is empty (0 samples): {path}")
    return f


class SongReader:
    """A song opened for streaming: its format, and its model-rate blocks (the decode stage).

    ``song_as_hz``/``model_as_hz`` are the rates resampled between: the song's and the model's,
    unless their ratio is too large to compute (:func:`waveunet.audio.tractable_rates`), when
    ``note`` says which rate was treated as which. ``total`` is the model-rate length.
    """

    def __init__(self, path: str | os.PathLike, model_rate_hz: int, model_channels: int,
                 block_frames: int = DEFAULT_BLOCK_FRAMES):
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames}")
        self.path = Path(path)
        self.model_channels, self.block_frames = model_channels, block_frames
        self._stack = ExitStack()
        try:  # a check that fails after the song is open closes it (and ffmpeg's temp folder)
            self._file = f = open_song(self.path, self._stack)
            self.rate_hz, self.channels = int(f.samplerate), int(f.channels)
            self.frames = int(f.frames)
            pair = tractable_rates(self.rate_hz, model_rate_hz)
            self.song_as_hz, self.model_as_hz = pair
            self.note = (None if pair == (self.rate_hz, int(model_rate_hz)) else
                         rate_change_note(str(self.path), self.rate_hz, int(model_rate_hz), pair))
            # >= 1: open_song refuses 0 frames
            self.total = output_length(self.frames, self.song_as_hz, self.model_as_hz)
        except BaseException:
            self._stack.close()
            raise

    @property
    def resampled(self) -> bool:
        return self.song_as_hz != self.model_as_hz

    def blocks(self) -> Iterator[torch.Tensor]:
        """Model-rate (model channels, n) float32 blocks, ``total`` samples in all."""
        return _resampled(self._read_blocks(),
                          BlockResampler(self.song_as_hz, self.model_as_hz, self.model_channels))

    def _read_blocks(self) -> Iterator[torch.Tensor]:
        """The song's frames as (model channels, n) blocks (zeros if the file reads short)."""
        f, remaining, position = self._file, self.frames, 0
        while remaining > 0:
            n = min(self.block_frames, remaining)
            try:
                data = f.read(n, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise DataError(f"{self.path}: cannot decode it after {position} of "
                                f"{self.frames} frames ({_one_line(exc)})") from exc
            if data.shape[0] < n:  # a decoder that promised more frames than it has
                data = np.concatenate(
                    [data, np.zeros((n - data.shape[0], data.shape[1]), np.float32)])
            remaining -= n
            position += n
            block = np.ascontiguousarray(data.T)
            if not np.isfinite(block).all():
                raise DataError(f"{self.path}: the mixture contains NaN or infinite samples")
            yield torch.from_numpy(
                convert_channels(block, self.model_channels, via_mono=True).copy())

    def close(self) -> None:
        self._stack.close()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _resampled(blocks: Iterator[torch.Tensor], resampler: BlockResampler) -> Iterator[torch.Tensor]:
    for block in blocks:
        out = resampler.push(block)
        if out.shape[-1]:
            yield out
    out = resampler.finish()
    if out.shape[-1]:
        yield out


class StemWriter:
    """The write stage: model-rate chunks in, stem files of one song out, all or nothing.

    ``open`` makes one pid-tagged temporary per target next to it (removing stale
    temporaries of dead processes there first); ``push`` resamples a chunk's stems back to
    the song's rate (block by block), brings them to the song's channels and clamps them by
    the separator's one rule (:meth:`Separator.back_to_song`) and appends them; ``commit``
    renames every temporary into place, ``abort`` removes them (and the folders ``open``
    made). ``targets`` maps source names to files: every source, or some.
    """

    def __init__(self, separator: StreamingSeparator, song: SongReader,
                 targets: Mapping[str, str | os.PathLike], *, subtype: str | None = None,
                 overwrite: bool = False, compression_level: float | None = None):
        unknown = [name for name in targets if name not in separator.sources]
        if unknown or not targets:
            raise ValueError(f"targets must name some of {separator.sources}, got {list(targets)}")
        self.separator, self.song = separator, song
        self.targets = {name: Path(path) for name, path in targets.items()}
        self.index = [separator.sources.index(name) for name in self.targets]
        self.formats = [check_writable(t, overwrite) for t in self.targets.values()]
        self.subtype, self.overwrite = subtype, overwrite
        self.compression_level = compression_level
        low, high = separator.bounds
        self.clips = ClipAccumulator(separator.sources, low, high)
        self.temps: list[Path] = []
        self.made: list[Path] = []  # folders this writer created, removed again on abort
        self.writers: list[sf.SoundFile] = []
        self.written = 0
        n_src, model_ch = len(separator.sources), separator.channels
        self.back = BlockResampler(song.model_as_hz, song.song_as_hz, 2 * n_src * model_ch)

    def open(self) -> None:
        song = self.song
        for t, fmt in zip(self.targets.values(), self.formats, strict=True):
            if fmt == "MP3" and song.rate_hz not in MP3_RATES_HZ:
                raise DataError(
                    f"{song.path}: {song.rate_hz} Hz cannot be stored as MP3 (it stores "
                    f"{', '.join(map(str, MP3_RATES_HZ))} Hz); use --format flac or wav")
            missing = [d for d in (t.parent, *t.parent.parents) if not d.exists()]
            with write_errors(t):
                t.parent.mkdir(parents=True, exist_ok=True)
                self.made.extend(missing)
                remove_stale_temporaries(t.parent)
                self.temps.append(temporary_next_to(t))
                options = {} if fmt != "MP3" else {
                    "compression_level": self.compression_level, "bitrate_mode": "VARIABLE"}
                self.writers.append(sf.SoundFile(
                    str(self.temps[-1]), "w", samplerate=song.rate_hz, channels=song.channels,
                    subtype=self.subtype if fmt != "MP3" else "MPEG_LAYER_III", format=fmt,
                    **options))

    def push(self, stems: torch.Tensor, raw: torch.Tensor) -> None:
        """One chunk's kept (stems, unclipped), (S, C, n) at the model's rate."""
        self._emit(self.back.push(torch.cat([stems, raw]).reshape(self.back.channels, -1)))

    def _emit(self, block: torch.Tensor) -> None:  # (2 S C, n) at the song's rate
        song, sep = self.song, self.separator
        n = min(block.shape[-1], song.frames - self.written)
        if n <= 0:
            return
        both = block[:, :n].reshape(2, len(sep.sources), sep.channels, n)
        stems, raw = sep.back_to_song(both[0], both[1], song.channels, song.resampled)
        self.clips.add(stems, raw)
        for i, (w, t) in zip(self.index, zip(self.writers, self.targets.values(), strict=True),
                             strict=True):
            with write_errors(t):
                w.write(np.ascontiguousarray(stems[i].numpy().T))
        self.written += n

    def commit(self) -> FileSeparation:
        """Flush the last samples and rename every stem into place."""
        self._emit(self.back.finish())
        length = self.song.frames
        if self.written < length:  # resampling rounds the length; pad as _fit_length does
            self._emit(torch.zeros(self.back.channels, length - self.written))
        for w, t in zip(self.writers, self.targets.values(), strict=True):
            with write_errors(t):
                w.close()
        targets = list(self.targets.values())
        for t, tmp in zip(targets, self.temps, strict=True):
            os.chmod(tmp, FILE_MODE)
            check_not_existing(t, self.overwrite)  # again: one may have appeared meanwhile
        done: list[Path] = []
        try:
            for t, tmp in zip(targets, self.temps, strict=True):
                os.replace(tmp, t)
                done.append(t)
        except BaseException:
            if not self.overwrite:  # leave no partial set of stems
                for t in done:
                    t.unlink(missing_ok=True)
            raise
        song = self.song
        report = self.clips.report()
        return FileSeparation(targets, {name: report[name] for name in self.targets},
                              song.channels, song.rate_hz, song.frames, self.separator.bounds,
                              song.note)

    def abort(self) -> None:
        for w in self.writers:  # close before unlinking: an open writer would flush into it
            try:
                w.close()
            except Exception:
                pass
        for tmp in self.temps:
            tmp.unlink(missing_ok=True)
        for folder in self.made:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                pass


def separate_file(
    separator: StreamingSeparator,
    song: str | os.PathLike,
    targets: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
    *,
    subtype: str | None = None,
    overwrite: bool = False,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    desc: str | None = None,
    compression_level: float | None = None,
) -> FileSeparation:
    """Separate ``song`` into one file per source: ``targets`` in ``separator.sources`` order,
    or a mapping from some of the sources to their files.

    Stems come back at the song's rate, channel count and length, equal (to
    float rounding) to ``separator.separate(read_audio(song))`` written with
    ``write_audio``. Each stem is written to a temporary file next to its
    target and all are renamed into place only when the whole song is done;
    on any failure the temporaries are removed and no target is touched. An
    existing target is a DataError unless ``overwrite``, and so is a NaN or infinite model
    output (:meth:`Separator.iter_chunks`, ``check_finite``); a full disk (or quota, or file-size
    limit) is a :class:`~waveunet.errors.DiskFullError` naming the file.
    :mod:`waveunet.separation.pipeline` runs the same stages for many songs, overlapped.
    """
    if not isinstance(targets, Mapping):
        targets = list(targets)
        if len(targets) != len(separator.sources):
            raise ValueError(f"need {len(separator.sources)} targets, got {len(targets)}")
        targets = dict(zip(separator.sources, targets, strict=True))
    for t in targets.values():
        check_writable(t, overwrite)
    reader: SongReader | None = None
    try:
        reader = SongReader(song, separator.sample_rate_hz, separator.channels, block_frames)
        writer = StemWriter(separator, reader, targets, subtype=subtype, overwrite=overwrite,
                            compression_level=compression_level)
        try:
            writer.open()
            window = StreamWindow(reader.blocks(), reader.total, separator.channels)
            for est, raw in separator.iter_chunks(reader.total, window, desc,
                                                  check_finite=True):
                writer.push(est, raw)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise
    finally:
        if reader is not None:
            reader.close()
