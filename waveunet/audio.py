"""Audio I/O, resampling and channel conversion: the one place the project touches audio files.

Arrays are ``(channels, samples)`` float32 throughout. Reading goes through
soundfile (libsndfile: WAV, FLAC, OGG, MP3) and falls back to an ffmpeg
subprocess for containers libsndfile cannot open (m4a, mp4, ...). Writing is
atomic so an interrupted run never leaves a truncated file under a final name.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .errors import NO_SPACE, DataError, disk_full, space_checked
from .files import atomic_write

log = logging.getLogger(__name__)

_WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".mp3": "MP3"}
# The sample rates an MP3 (MPEG-1/2/2.5 layer III) stores.
MP3_RATES_HZ = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# torchaudio's windowed-sinc resampler (and :class:`waveunet.separation.streaming.BlockResampler`)
# builds ``new`` filters of ``2 * width + orig`` taps for the gcd-reduced ratio orig/new: for
# 44,101 -> 44,100 Hz that is 44,100 x 44,115 taps (7.8 GB) and as many multiply-adds per
# input sample. A ratio whose filter bank has more taps than this is not computed as is (see
# :func:`tractable_rates`). 2**20 taps (4 MiB of float32) admit every ratio between the usual
# rates, 8 to 192 kHz (48,000 -> 44,100 Hz: 25,578 taps; 22,050 -> 32,000: 291,200; the
# largest, 11,025 -> 32,000: 582,400). The largest ratio admitted to a model's rate,
# 44,100 -> 130,575 Hz (1,048,082 taps), raised a process's peak memory by 21 MiB while
# torchaudio built its kernel (float64 intermediates), 40 MiB while resampling 10 s of stereo.
MAX_RESAMPLING_TAPS = 2**20
# How far (relative) a rate may be moved to reach a computable ratio.
MAX_RATE_CHANGE = 0.01
_LOWPASS_FILTER_WIDTH = 6  # torchaudio.functional.resample's defaults
_ROLLOFF = 0.99


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a whole file as float32 ``(channels, samples)`` and its sample rate in Hz."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as sf_exc:
        try:
            with tempfile.TemporaryDirectory(prefix="waveunet-decode-") as folder:
                data, rate = sf.read(
                    str(decode_with_ffmpeg(path, folder)), dtype="float32", always_2d=True
                )
        except (DataError, sf.LibsndfileError, RuntimeError) as ff_exc:
            raise ffmpeg_fallback_error(path, sf_exc, ff_exc) from sf_exc
    audio = np.ascontiguousarray(data.T)
    if audio.shape[1] == 0:
        raise DataError(f"audio file is empty (0 samples): {path}")
    return audio, int(rate)


def audio_format(path: str | os.PathLike) -> tuple[int, int]:
    """``(sample rate in Hz, channels)`` of an audio file as stored, from its header.

    libsndfile's formats (WAV, FLAC, ...) through soundfile; MP4 containers (MUSDB18's
    ``.stem.mp4``: its first stream, the mixture) through ffprobe, via stempeg, so a WAV
    dataset never needs ffmpeg for this. Another format libsndfile cannot open (m4a, ...) is
    decoded (:func:`read_audio`). DataError naming the file if it cannot be read.
    """
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        import stempeg

        try:
            info = stempeg.Info(str(path))
            return int(info.sample_rate(0)), int(info.channels(0))
        except Exception as exc:  # ffprobe missing or failing, no audio stream
            raise DataError(f"cannot read the audio header of {path}: "
                            f"{_first_line(exc)}") from exc
    try:
        info = sf.info(str(path))
        return int(info.samplerate), int(info.channels)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        audio, rate = read_audio(path)
        return rate, int(audio.shape[0])


def decode_with_ffmpeg(path: Path, folder: str | os.PathLike) -> Path:
    """Decode the first audio stream of ``path`` to a float WAV in ``folder`` (m4a, mp4, ...).

    The fallback of both read paths (:func:`read_audio`, and the block reader of
    :mod:`waveunet.separation.streaming`) for containers libsndfile cannot open. A decoding error
    stops ffmpeg (``-xerror``): without it ffmpeg prints the error, writes the audio it decoded up
    to there (half of a truncated FLAC) and exits 0.
    """
    if shutil.which("ffmpeg") is None:
        raise DataError("ffmpeg not installed")
    wav = Path(folder) / "decoded.wav"
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-map", "0:a:0",
         "-c:a", "pcm_f32le", "-f", "wav", "-y", str(wav)],
        capture_output=True, check=False,
    )
    if done.returncode != 0 or not wav.is_file():
        raise DataError(done.stderr.decode(errors="replace").strip() or "ffmpeg failed")
    return wav


def ffmpeg_fallback_error(path: Path, sf_exc: BaseException, ff_exc: BaseException) -> DataError:
    """One line naming the file; what libsndfile and ffmpeg said in full is the error's
    ``detail`` (``waveunet separate -v`` prints it)."""
    error = DataError(f"cannot read audio file {path}: {_first_line(sf_exc)} (ffmpeg could not "
                      f"decode it either: {_first_line(ff_exc)})")
    error.detail = f"libsndfile: {sf_exc}\nffmpeg: {ff_exc}"
    return error


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@contextmanager
def write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a failed write of ``path`` into one line naming the file: out of space (disk,
    quota, file-size limit) a :class:`~waveunet.errors.DiskFullError` as everywhere else
    (:func:`waveunet.errors.space_checked`), any other libsndfile failure a DataError.

    libsndfile reports a failed write as "System error" alone; the C library's errno, which
    soundfile's cffi interface keeps, says why.
    """
    try:
        if _SF_FFI is not None:
            _SF_FFI.errno = 0
        with space_checked(path):
            yield
    except sf.LibsndfileError as exc:
        code = _SF_FFI.errno if _SF_FFI is not None else 0
        if code in NO_SPACE:
            raise disk_full(path, code) from None
        raise DataError(f"cannot write {path}: {_first_line(exc)}") from exc


# soundfile's cffi FFI object: its ``errno`` is the C errno after soundfile's last call.
_SF_FFI = getattr(sf, "_ffi", None)


def check_writable(path: str | os.PathLike, overwrite: bool) -> str:
    """The soundfile format for ``path``'s extension; DataError if it is unsupported, or if the
    file exists and not ``overwrite``."""
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"cannot write {path}: unsupported extension (use {', '.join(_WRITE_FORMATS)})"
        )
    check_not_existing(path, overwrite)
    return fmt


def check_not_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise DataError(f"refusing to overwrite existing file {path} "
                        "(to replace it: --force on the command line, overwrite=True in Python)")


def write_audio(
    path: str | os.PathLike,
    audio: np.ndarray | torch.Tensor,
    sample_rate_hz: int,
    *,
    subtype: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``(channels, samples)`` audio; the format follows the extension (.wav, .flac, .mp3).

    The file is written under a temporary name in the same directory and then
    renamed, so readers never see a half-written file.
    """
    path = Path(path)
    fmt = check_writable(path, overwrite)
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio)
    if audio.ndim != 2:
        raise DataError(
            f"cannot write {path}: expected (channels, samples), got shape {audio.shape}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_errors(path):
        atomic_write(path, lambda tmp: sf.write(tmp, np.ascontiguousarray(audio.T),
                                                int(sample_rate_hz), subtype=subtype, format=fmt))
    return path


def resampling_taps(from_hz: int, to_hz: int) -> int:
    """Taps of torchaudio's polyphase filter bank for ``from_hz`` -> ``to_hz`` (0: equal rates)."""
    from_hz, to_hz = int(from_hz), int(to_hz)
    if from_hz == to_hz:
        return 0
    gcd = math.gcd(from_hz, to_hz)
    orig, new = from_hz // gcd, to_hz // gcd
    width = math.ceil(_LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * _ROLLOFF))
    return new * (2 * width + orig)


def _tractable(from_hz: int, to_hz: int) -> bool:
    return max(resampling_taps(from_hz, to_hz), resampling_taps(to_hz, from_hz)) \
        <= MAX_RESAMPLING_TAPS


def tractable_rates(from_hz: int, to_hz: int) -> tuple[int, int]:
    """The rates to resample between: ``(from_hz, to_hz)``, or the closest pair whose filter
    bank is small enough (:data:`MAX_RESAMPLING_TAPS`, both directions), moving one rate by
    the fewest hertz (``from_hz`` first at equal distance), by at most :data:`MAX_RATE_CHANGE`.

    Treating audio at ``from_hz`` as if it were at ``from_hz + d`` changes the pitch and tempo
    of what the other side gets by ``d / from_hz`` (44,101 Hz read as 44,100 Hz: the
    model hears the song 0.0023 %, 0.04 cents, lower and slower) and keeps every sample:
    resampling back with the same pair returns the same number of samples, aligned, so stems
    written at the song's rate are not shifted against the song.
    DataError if no such pair exists.
    """
    from_hz, to_hz = int(from_hz), int(to_hz)
    if _tractable(from_hz, to_hz):
        return from_hz, to_hz
    for d in range(1, int(MAX_RATE_CHANGE * max(from_hz, to_hz)) + 1):
        for pair in ((from_hz - d, to_hz), (from_hz + d, to_hz),
                     (from_hz, to_hz - d), (from_hz, to_hz + d)):
            if min(pair) > 0 and abs(pair[0] - from_hz) <= MAX_RATE_CHANGE * from_hz \
                    and abs(pair[1] - to_hz) <= MAX_RATE_CHANGE * to_hz and _tractable(*pair):
                return pair
    raise DataError(f"cannot resample {from_hz} Hz to {to_hz} Hz: their ratio is too large to "
                    "compute, and no rate within 1 % of either gives a smaller one")


def resample(
    audio: torch.Tensor | np.ndarray, from_hz: int, to_hz: int, what: str = "audio"
) -> torch.Tensor | np.ndarray:
    """Resample along the last axis; returns the input's type (tensor or array).

    A ratio too large to compute is replaced by the close one :func:`tractable_rates`
    chooses, with a warning that names ``what`` (the file): bounded memory and time for any
    pair of rates.
    """
    if int(from_hz) == int(to_hz):
        return audio
    from_hz, to_hz = approximate_rates(from_hz, to_hz, what)
    if from_hz == to_hz:
        return audio
    import torchaudio.functional as AF

    is_numpy = isinstance(audio, np.ndarray)
    tensor = (
        torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        if is_numpy
        else audio.contiguous()
    )
    # The gcd-reduced ratio keeps the polyphase filter small (44100 -> 22050 is 2 -> 1).
    out = AF.resample(tensor, int(from_hz), int(to_hz))
    return out.numpy() if is_numpy else out


def approximate_rates(from_hz: int, to_hz: int, what: str = "audio") -> tuple[int, int]:
    """:func:`tractable_rates`, with a warning that says what the replacement changes.

    A logging warning (logger ``waveunet.audio``), not :func:`warnings.warn`, whose filter
    shows a message once per process: each file treated so is named.
    """
    pair = tractable_rates(from_hz, to_hz)
    if pair != (int(from_hz), int(to_hz)):
        log.warning("%s", rate_change_note(what, int(from_hz), int(to_hz), pair))
    return pair


def rate_change_note(what: str, from_hz: int, to_hz: int, pair: tuple[int, int]) -> str:
    """One line: which rate was treated as which, and the pitch change that results."""
    if pair[0] != from_hz:
        old, new = from_hz, pair[0]
    else:
        old, new = to_hz, pair[1]
    return (f"{what}: resampling {from_hz} -> {to_hz} Hz exactly needs too large a filter; "
            f"{old} Hz is treated as {new} Hz (what is resampled changes pitch and tempo by "
            f"{100 * (new - old) / old:+.4f} %)")


def convert_channels(audio: torch.Tensor | np.ndarray, channels: int, *,
                     via_mono: bool = False) -> torch.Tensor | np.ndarray:
    """Match the channel count (axis -2): average to mono, repeat mono to many.

    Other conversions (e.g. 6 -> 2) are an error for dataset stems, where they
    hint at a wrong file; with ``via_mono`` (a user's song) they go through mono.
    """
    have = audio.shape[-2]
    if have == channels:
        return audio
    if channels == 1:
        return (
            audio.mean(-2, keepdims=True)
            if isinstance(audio, np.ndarray)
            else audio.mean(-2, keepdim=True)
        )
    if have == 1:
        reps = [1] * audio.ndim
        reps[-2] = channels
        return np.tile(audio, reps) if isinstance(audio, np.ndarray) else audio.repeat(*reps)
    if via_mono:
        return convert_channels(convert_channels(audio, 1), channels)
    raise DataError(
        f"cannot convert {have}-channel audio to {channels} channels (only to/from mono)"
    )
