"""``waveunet separate``: files in, stems out, and clear errors for everything that goes wrong."""

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import files_under, separate, tiny_checkpoint, tone, write_song

from waveunet.separation.layout import MANIFEST

SOURCES = ("accompaniment", "vocals")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


def test_separates_formats_rates_and_channels(tmp_path, checkpoint, capsys):
    songs = {
        "stereo44": (write_song(tmp_path / "stereo44.wav", tone(2, 1.3, 44100), 44100), 2, 44100),
        "mono48": (write_song(tmp_path / "mono48.flac", tone(1, 0.7, 48000), 48000), 1, 48000),
        "short22": (write_song(tmp_path / "short22.ogg", tone(2, 0.01, 22050), 22050), 2, 22050),
    }
    out = tmp_path / "out"
    assert separate(*(p for p, _, _ in songs.values()), "-c", checkpoint, "-o", out, "-q") == 0
    for name, (path, channels, rate) in songs.items():
        frames = sf.info(str(path)).frames
        for source in SOURCES:
            info = sf.info(str(out / "model" / name / f"{source}.wav"))
            assert (info.samplerate, info.channels, info.frames) == (rate, channels, frames)
            assert info.subtype == "PCM_16"
    assert files_under(out) == sorted([MANIFEST] + [f"model/{n}/{s}.wav" for n in songs
                                                    for s in SOURCES])


def test_mp3_and_m4a_inputs(tmp_path, checkpoint):
    mp3 = write_song(tmp_path / "song.mp3", tone(2, 1.0, 44100), 44100, format="MP3")
    songs = [mp3]
    if shutil.which("ffmpeg"):
        m4a = tmp_path / "clip.m4a"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(mp3), "-c:a", "aac",
                        str(m4a)], check=True)
        songs.append(m4a)
    out = tmp_path / "out"
    assert separate(*songs, "-c", checkpoint, "-o", out, "-q", "--format", "flac", "--bits",
                    "24") == 0
    for song in songs:
        info = sf.info(str(out / "model" / song.stem / "vocals.flac"))
        assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_24")
        decoded_frames = sf.info(str(song)).frames if song.suffix == ".mp3" else None
        if decoded_frames is not None:
            assert info.frames == decoded_frames


def test_float_output_keeps_the_stems_exactly(tmp_path, checkpoint):
    from waveunet.separation.inference import Separator

    audio = tone(2, 0.5, 22050)
    song = write_song(tmp_path / "song.wav", audio, 22050, subtype="FLOAT")
    assert separate(song, "-c", checkpoint, "-o", tmp_path / "out", "-q", "--bits", "32f") == 0
    expected = Separator.from_checkpoint(checkpoint, device="cpu").separate(audio, 22050)
    for i, source in enumerate(SOURCES):
        stem, rate = sf.read(str(tmp_path / "out" / "model" / "song" / f"{source}.wav"),
                             dtype="float32")
        np.testing.assert_allclose(stem.T, expected.stems[i].numpy(), atol=1e-6)


def test_existing_stems_are_kept_unless_force(tmp_path, checkpoint, capsys):
    song = write_song(tmp_path / "song.wav", tone(2, 0.5, 22050), 22050)
    out = tmp_path / "out"
    target = out / "model" / "song" / "vocals.wav"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"precious")
    assert separate(song, "-c", checkpoint, "-o", out, "-q") == 1
    err = capsys.readouterr().err
    assert "refusing to overwrite existing file" in err and "--force" in err
    assert target.read_bytes() == b"precious"
    assert files_under(out) == ["model/song/vocals.wav"]  # nothing else written for this song
    assert separate(song, "-c", checkpoint, "-o", out, "-q", "--force") == 0
    assert sf.info(str(target)).frames == 11025


def test_bad_songs_are_reported_and_the_others_still_separate(tmp_path, checkpoint, capsys):
    good = write_song(tmp_path / "good.wav", tone(2, 0.5, 22050), 22050)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    zero = write_song(tmp_path / "zero.wav", np.zeros((2, 0), np.float32), 22050)
    folder = tmp_path / "folder"
    folder.mkdir()
    missing = tmp_path / "missing.wav"
    out = tmp_path / "out"
    bad = [corrupt, empty, zero, folder, missing]
    assert separate(corrupt, empty, good, zero, folder, missing, "-c", checkpoint, "-o", out,
                    "-q") == 1
    err = capsys.readouterr().err
    for song in bad:
        assert str(song) in err
    assert "no audio files in this folder" in err and "0 samples" in err
    assert "5 of 6 song(s) failed" in err
    # no temp files, no partial sets
    assert files_under(out) == [MANIFEST] + [f"model/good/{s}.wav" for s in SOURCES]


def test_same_song_name_twice_is_refused(tmp_path, checkpoint, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_song(tmp_path / "a" / "song.wav", tone(2, 0.2, 22050), 22050)
    second = write_song(tmp_path / "b" / "song.wav", tone(1, 0.2, 22050), 22050)
    assert separate(first, second, "-c", checkpoint, "-o", tmp_path / "out", "-q", "--force") == 1
    assert "same output file" in capsys.readouterr().err
    assert sf.info(str(tmp_path / "out" / "model" / "song" / "vocals.wav")).channels == 2


def test_checkpoint_errors(tmp_path, checkpoint, capsys):
    song = write_song(tmp_path / "song.wav", tone(2, 0.2, 22050), 22050)
    out = tmp_path / "out"
    assert separate(song, "-c", tmp_path / "nope.pt", "-o", out) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    assert separate(song, "-c", junk, "-o", out) == 2
    assert "not a readable waveunet checkpoint" in capsys.readouterr().err
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    assert separate(song, "-c", foreign, "-o", out) == 2
    assert "not a waveunet checkpoint" in capsys.readouterr().err
    old = torch.load(checkpoint, weights_only=True)
    old["format_version"] = 99
    torch.save(old, tmp_path / "future.pt")
    assert separate(song, "-c", tmp_path / "future.pt", "-o", out) == 2
    assert "format version 99" in capsys.readouterr().err
    assert not out.exists()


def test_option_errors(tmp_path, checkpoint, capsys):
    song = write_song(tmp_path / "song.wav", tone(2, 0.2, 22050), 22050)
    assert separate(song, "-c", checkpoint, "--format", "flac", "--bits", "32f") == 2
    assert "FLAC" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        separate(song, "-c", checkpoint, "--format", "ogg")
    assert separate(song, "-c", checkpoint, "--batch", "0") == 2


def test_clipping_report_and_chunk_options(tmp_path, checkpoint, capsys):
    song = write_song(tmp_path / "loud.wav", np.clip(3 * tone(2, 0.5, 22050), -1, 1), 22050)
    out = tmp_path / "out"
    assert separate(song, "-c", checkpoint, "-o", out, "--chunk-seconds", "0.05", "--batch",
                    "3") == 0
    text = capsys.readouterr().out
    assert "accompaniment:" in text and "vocals:" in text and "output bounds [-1, 1]" in text
    by_chunks = sf.read(str(out / "model" / "loud" / "vocals.wav"))[0]
    assert separate(song, "-c", checkpoint, "-o", out, "-q", "--force", "--memory-gib", "0.5") == 0
    np.testing.assert_allclose(
        sf.read(str(out / "model" / "loud" / "vocals.wav"))[0], by_chunks, atol=1.5 / 32768
    )


def test_long_song_is_streamed_in_blocks_and_equals_the_array_api(tmp_path, checkpoint):
    from waveunet.separation.inference import Separator
    from waveunet.separation.streaming import DEFAULT_BLOCK_FRAMES

    audio = tone(1, 3.2, 44100)  # several read blocks, resampled both ways
    assert audio.shape[1] > 2 * DEFAULT_BLOCK_FRAMES
    song = write_song(tmp_path / "long.wav", audio, 44100, subtype="FLOAT")
    out = tmp_path / "out"
    assert (
        separate(song, "-c", checkpoint, "-o", out, "-q", "--bits", "32f", "--chunk-seconds",
                 "0.3") == 0
    )
    expected = Separator.from_checkpoint(checkpoint, device="cpu").separate(audio, 44100)
    for i, source in enumerate(SOURCES):
        stem, rate = sf.read(str(out / "model" / "long" / f"{source}.wav"), dtype="float32",
                             always_2d=True)
        assert rate == 44100 and stem.shape == (audio.shape[1], 1)
        np.testing.assert_allclose(stem.T, expected.stems[i].numpy(), atol=1e-5)


def test_a_song_failing_mid_stream_leaves_nothing_behind(tmp_path, checkpoint, capsys):
    audio = tone(2, 3.0, 22050)
    audio[:, -100] = np.nan  # read in the last block, after stems were partly written
    bad = write_song(tmp_path / "bad.wav", audio, 22050, subtype="FLOAT")
    good = write_song(tmp_path / "good.wav", tone(2, 0.3, 22050), 22050)
    out = tmp_path / "out"
    kept = out / "model" / "bad" / "vocals.wav"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"precious")
    assert separate(bad, good, "-c", checkpoint, "-o", out, "-q", "--force") == 1
    assert "NaN" in capsys.readouterr().err
    assert kept.read_bytes() == b"precious"  # not replaced by a half-separated song
    assert files_under(out) == [MANIFEST, "model/bad/vocals.wav"] + [f"model/good/{s}.wav"
                                                                     for s in SOURCES]
    nan_only = write_song(tmp_path / "nan.wav", audio, 22050, subtype="FLOAT")
    assert separate(nan_only, "-c", checkpoint, "-o", tmp_path / "fresh", "-q") == 1
    assert not (tmp_path / "fresh").exists()  # no empty folders left behind either


def test_a_model_that_outputs_nan_fails_each_song_and_writes_nothing(tmp_path, checkpoint,
                                                                    capsys):
    from waveunet.model.checkpoint import load_model

    model = load_model(checkpoint, "cpu")
    with torch.no_grad():
        model.head.convs[0].weight[0, 0, 0] = float("nan")
    from waveunet.model.checkpoint import save_checkpoint

    broken = save_checkpoint(tmp_path / "broken.pt", model)
    songs = [write_song(tmp_path / f"{name}.wav", tone(2, 2.0, 22050), 22050) for name in "ab"]
    out = tmp_path / "out"
    assert separate(*songs, "-c", broken, "-o", out, "-q", "--chunk-seconds", "0.5",
                    "--precision", "fp32") == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"waveunet separate: error: {song}: the model of {broken} produced "
                     "non-finite output (NaN or infinity) in fp32: its weights are broken, or "
                     "overflow in this precision" for song in songs] + [
        f"waveunet separate: 2 of 2 song(s) failed: {songs[0]}, {songs[1]}"]
    assert files_under(out) == []
    from waveunet.errors import DataError
    from waveunet.separation.inference import Separator

    separator = Separator.from_checkpoint(broken, device="cpu", precision="fp32")
    with pytest.raises(DataError, match=f"^the model of {broken} produced non-finite"):
        separator.separate_file(songs[0], [out / "a.wav", out / "b.wav"])  # the one-song path
    assert files_under(out) == []
