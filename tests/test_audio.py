from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import write_stem_mp4

from waveunet.audio import convert_channels, read_audio, resample, write_audio
from waveunet.errors import DataError


def _noise(channels: int = 2, samples: int = 4410, seed: int = 0) -> np.ndarray:
    return (0.5 * np.random.default_rng(seed).uniform(-1, 1, (channels, samples))).astype(
        np.float32
    )


@pytest.mark.parametrize(
    ("ext", "subtype", "tol"),
    [(".wav", "FLOAT", 0.0), (".wav", "PCM_24", 2.0**-23), (".flac", "PCM_16", 2.0**-15)],
)
def test_write_read_round_trip(tmp_path: Path, ext: str, subtype: str, tol: float) -> None:
    audio = _noise()
    path = write_audio(tmp_path / f"x{ext}", audio, 22050, subtype=subtype)
    back, rate = read_audio(path)
    assert rate == 22050 and back.dtype == np.float32 and back.shape == audio.shape
    assert np.max(np.abs(back - audio)) <= tol
    assert sf.info(str(path)).subtype == subtype


def test_write_accepts_tensor_and_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    write_audio(path, torch.zeros(1, 100), 8000)
    with pytest.raises(DataError, match="x.wav"):
        write_audio(path, _noise(1, 100), 8000)
    assert not np.any(read_audio(path)[0])  # unchanged
    write_audio(path, _noise(1, 100), 8000, overwrite=True)
    assert np.any(read_audio(path)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav"]  # no temporaries left


def test_write_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_write(file, *args, **kwargs):
        Path(file).write_bytes(b"RIFF half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sf, "write", broken_write)
    with pytest.raises(RuntimeError):
        write_audio(tmp_path / "x.wav", _noise(), 44100)
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="extension"):
        write_audio(tmp_path / "x.mp4", _noise(), 44100)


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing.wav"):
        read_audio(tmp_path / "missing.wav")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(DataError, match="corrupt.wav"):
        read_audio(corrupt)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 2), dtype=np.float32), 44100, subtype="FLOAT")
    with pytest.raises(DataError, match="empty"):
        read_audio(empty)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_read_falls_back_to_ffmpeg_for_m4a(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    tone = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 440 * t)]).astype(
        np.float32
    )
    wav = write_audio(tmp_path / "tone.wav", tone, 44100, subtype="FLOAT")
    m4a = tmp_path / "tone.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(wav), "-c:a", "aac", "-b:a", "192k", str(m4a)],
        check=True,
    )
    audio, rate = read_audio(m4a)
    assert rate == 44100 and audio.shape[0] == 2 and audio.shape[1] >= 44100
    # AAC is lossy: compare levels, not samples.
    rms = np.sqrt(np.mean(audio[:, 4410:-4410] ** 2, axis=1))
    assert np.allclose(rms, [0.5 / np.sqrt(2), 0.25 / np.sqrt(2)], rtol=0.1)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_a_file_that_fails_part_way_is_an_error_not_its_first_part(tmp_path: Path) -> None:
    # The first half of a FLAC: libsndfile stops with "lost sync"; ffmpeg, the fallback, would
    # print the decoding error and hand over the first half with exit status 0.
    full = write_audio(tmp_path / "full.flac", 0.1 * _noise(samples=264600), 44100)
    data = full.read_bytes()
    truncated = tmp_path / "trunc.flac"
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(sf.LibsndfileError):
        sf.read(str(truncated))
    with pytest.raises(DataError, match="trunc.flac") as caught:
        read_audio(truncated)
    assert "\n" not in str(caught.value)
    assert read_audio(full)[0].shape == (2, 264600)


def test_resample_keeps_type_tone_and_identity() -> None:
    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 1000 * t)[None].astype(np.float32)
    assert resample(tone, 44100, 44100) is tone
    half = resample(tone, 44100, 22050)
    assert isinstance(half, np.ndarray) and half.shape == (1, 22050)
    expected = np.sin(2 * np.pi * 1000 * np.arange(22050) / 22050)
    assert np.max(np.abs(half[0, 500:-500] - expected[500:-500])) < 0.01
    tensor = resample(torch.from_numpy(tone), 44100, 22050)
    assert isinstance(tensor, torch.Tensor) and torch.allclose(tensor, torch.from_numpy(half))


USUAL_RATES_HZ = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400,
                  192000)


@pytest.mark.parametrize("model_hz", [22050, 44100])
def test_every_usual_rate_resamples_exactly_to_the_models_rates(model_hz: int) -> None:
    from waveunet.audio import tractable_rates

    for rate in USUAL_RATES_HZ:
        assert tractable_rates(rate, model_hz) == (rate, model_hz)
        assert tractable_rates(model_hz, rate) == (model_hz, rate)


def test_an_odd_rate_is_named_by_file_in_a_logged_warning_each_time(
        caplog: pytest.LogCaptureFixture) -> None:
    import warnings

    audio = _noise(samples=4410)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Python warning (shown once per process)
        with caplog.at_level(logging.WARNING, logger="waveunet"):
            for _ in range(2):
                out = resample(audio, 44101, 22050, what="songs/odd.wav")
                assert out.shape == (2, 2205)  # 44,101 Hz treated as 44,100 Hz
            resample(audio, 44101, 22050)  # callers that name nothing
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and messages[0] == messages[1]
    assert messages[0].startswith("songs/odd.wav: resampling 44101 -> 22050 Hz")
    assert "44101 Hz is treated as 44100 Hz" in messages[0]
    assert messages[2].startswith("audio: ")


def test_convert_channels() -> None:
    stereo = np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32)
    assert np.array_equal(convert_channels(stereo, 1), [[2.0, 4.0]])
    assert np.array_equal(convert_channels(stereo[:1], 2), [[1.0, 2.0], [1.0, 2.0]])
    assert convert_channels(stereo, 2) is stereo
    batch = torch.ones(3, 1, 5)
    assert convert_channels(batch, 2).shape == (3, 2, 5)
    with pytest.raises(DataError, match="3-channel"):
        convert_channels(np.zeros((3, 10)), 2)


def test_check_writable_gives_the_format_and_refuses(tmp_path: Path) -> None:
    from waveunet.audio import check_writable

    assert check_writable(tmp_path / "a.FLAC", overwrite=False) == "FLAC"
    assert check_writable(tmp_path / "a.mp3", overwrite=False) == "MP3"
    with pytest.raises(DataError, match="unsupported extension"):
        check_writable(tmp_path / "a.ogg", overwrite=True)
    (tmp_path / "a.wav").write_bytes(b"x")
    with pytest.raises(DataError, match="refusing to overwrite existing file"):
        check_writable(tmp_path / "a.wav", overwrite=False)
    assert check_writable(tmp_path / "a.wav", overwrite=True) == "WAV"


def test_audio_format_reads_headers_and_needs_ffprobe_for_mp4_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stempeg

    from waveunet.audio import audio_format

    stem = tmp_path / "Artist - Song.stem.mp4"
    write_stem_mp4(stem, seconds=0.2)
    assert audio_format(stem) == (44100, 2)  # the mixture stream, through ffprobe
    write_audio(tmp_path / "a.wav", _noise(1, 100), 22050)
    write_audio(tmp_path / "b.flac", _noise(2, 100), 48000)

    def no_ffprobe(path: str) -> None:
        raise FileNotFoundError("ffprobe")

    monkeypatch.setattr(stempeg, "Info", no_ffprobe)
    assert audio_format(tmp_path / "a.wav") == (22050, 1)
    assert audio_format(tmp_path / "b.flac") == (48000, 2)
    with pytest.raises(DataError, match=r"cannot read the audio header of .*Song\.stem\.mp4"):
        audio_format(stem)
