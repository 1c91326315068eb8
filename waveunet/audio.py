"""Audio I/O, resampling and channel conversion: the one place the project touches audio files.

Arrays are ``(channels, samples)`` float32 throughout. Reading goes through
soundfile (libsndfile: WAV, FLAC, OGG, MP3) and falls back to an ffmpeg
subprocess for containers libsndfile cannot open (m4a, mp4, ...). Writing is
atomic so an interrupted run never leaves a truncated file under a final name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .errors import DataError
from .files import atomic_write

_WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


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


def decode_with_ffmpeg(path: Path, folder: str | os.PathLike) -> Path:
    """Decode the first audio stream of ``path`` to a float WAV in ``folder`` (m4a, mp4, ...).

    The fallback of both read paths (:func:`read_audio`, and the block reader of
    :mod:`waveunet.streaming`) for containers libsndfile cannot open.
    """
    if shutil.which("ffmpeg") is None:
        raise DataError("ffmpeg not installed")
    wav = Path(folder) / "decoded.wav"
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
         "-c:a", "pcm_f32le", "-f", "wav", "-y", str(wav)],
        capture_output=True, check=False,
    )
    if done.returncode != 0 or not wav.is_file():
        raise DataError(done.stderr.decode(errors="replace").strip() or "ffmpeg failed")
    return wav


def ffmpeg_fallback_error(path: Path, sf_exc: BaseException, ff_exc: BaseException) -> DataError:
    return DataError(f"cannot read audio file {path}: {sf_exc}; ffmpeg fallback: {ff_exc}")


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
    """Write ``(channels, samples)`` audio; the format follows the extension (.wav, .flac).

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
    atomic_write(path, lambda tmp: sf.write(tmp, np.ascontiguousarray(audio.T), int(sample_rate_hz),
                                            subtype=subtype, format=fmt))
    return path


def resample(
    audio: torch.Tensor | np.ndarray, from_hz: int, to_hz: int
) -> torch.Tensor | np.ndarray:
    """Resample along the last axis; returns the input's type (tensor or array)."""
    if int(from_hz) == int(to_hz):
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
