"""``waveunet separate``'s surface: where stems go, what is taken as a song, formats and options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import files_under, separate, tiny_checkpoint, tone, write_song

from waveunet.separation.layout import (
    MANIFEST,
    checkpoint_identity,
    model_name,
    songs_in_folder,
    track_name,
)

SOURCES = ("accompaniment", "vocals")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint in a run folder whose config names the run, as `waveunet train` writes."""
    folder = tmp_path_factory.mktemp("runs") / "tiny-tanh_difference" / "2026-01-01_00-00-00"
    return tiny_checkpoint(folder / "best.pt", config={"name": "tiny-tanh_difference"})


MODEL = "tiny-tanh_difference"


def test_model_name_rule(tmp_path, checkpoint, capsys):
    run_name = "m5_highsr-linear_direct"
    assert model_name(Path("runs/x/s/best.pt"), {"name": run_name}) == run_name
    assert model_name(Path("runs/x/s/last.pt"), {"name": run_name}) == f"{run_name}-last"
    assert model_name(Path("m4.pt"), None) == "m4"  # e.g. an imported original model
    assert model_name(Path("a/../b.pt"), {"name": "x/../../y"}) == "x_.._.._y-b"
    song = write_song(tmp_path / "song.wav")
    out = tmp_path / "out"
    assert separate(song, "-c", checkpoint, "-o", out, "-q") == 0
    assert separate(song, "-c", checkpoint.parent, "-o", out, "-q", "-n",
                    "mine") == 0  # a run folder
    assert files_under(out) == sorted([MANIFEST] + [f"{m}/song/{s}.wav" for m in (MODEL, "mine")
                                                    for s in SOURCES])
    manifest = json.loads((out / MANIFEST).read_text())["models"]
    assert manifest[MODEL]["checkpoint"] == str(checkpoint.resolve())


def replace(source: Path, target: Path) -> None:
    """Copy ``source`` over ``target`` the way checkpoints are saved: a new file renamed."""
    shutil.copy(source, target.with_suffix(".new"))
    target.with_suffix(".new").replace(target)


def test_another_checkpoint_under_the_same_name_is_refused_without_force(tmp_path, capsys):
    first = tiny_checkpoint(tmp_path / "a" / "best.pt", seed=0, config={"name": "run"})
    second = tiny_checkpoint(tmp_path / "b" / "best.pt", seed=1, config={"name": "run"})
    one, two = write_song(tmp_path / "one.wav"), write_song(tmp_path / "two.wav", tone(seed=1))
    out = tmp_path / "out"
    assert separate(one, "-c", first, "-o", out, "-q") == 0
    before = files_under(out)
    assert separate(two, "-c", second, "-o", out, "-q") == 2  # a different song, the same name
    err = capsys.readouterr().err
    assert "another checkpoint" in err and "-n/--name" in err and len(err.splitlines()) == 1
    assert files_under(out) == before
    assert separate(two, "-c", first, "-o", out, "-q") == 0  # the same checkpoint may add songs
    copy = tmp_path / "c" / "best.pt"
    copy.parent.mkdir()
    shutil.copy(first, copy)  # the same weights elsewhere: the same checkpoint
    assert separate(one, "-c", copy, "-o", out, "-q", "--force") == 0
    replace(second, copy)  # saved again, as the trainer saves: the same path, other weights
    assert separate(one, "-c", copy, "-o", out, "-q", "--force", "--stems", "vocals") == 0
    assert separate(two, "-c", copy, "-o", out, "-q", "-f") == 0
    replace(first, copy)
    assert separate(two, "-c", copy, "-o", out, "-q") == 2
    assert "another checkpoint" in capsys.readouterr().err
    assert separate(one, "-c", second, "-o", out, "-q", "--force") == 0
    manifest = json.loads((out / MANIFEST).read_text())["models"]
    assert manifest["run"]["checkpoint"] == str(second.resolve())
    assert manifest["run"]["sha256"] == checkpoint_identity(second)


def test_filename_template(tmp_path, checkpoint, capsys):
    a = write_song(tmp_path / "albumA" / "song.wav")
    b = write_song(tmp_path / "albumB" / "song.wav", tone(seed=2))
    out = tmp_path / "out"
    assert separate(a, b, "-c", checkpoint, "-o", out, "-q", "--filename",
               "{model}/{parent}/{track}_{stem}.{ext}") == 0
    assert files_under(out) == sorted(
        [MANIFEST] + [f"{MODEL}/{p}/song_{s}.wav" for p in ("albumA", "albumB") for s in SOURCES])
    for template, message in [("{track}/{source}.{ext}", "unknown field {source}"),
                              ("../{track}/{stem}.{ext}", "relative path inside"),
                              ("/abs/{stem}.{ext}", "relative path inside"),
                              ("{track!r}/{stem}.{ext}", "unknown field")]:
        assert separate(a, "-c", checkpoint, "-o", out, "--filename", template) == 2
        assert message in capsys.readouterr().err
    # without {parent}, the two songs would collide: the second is refused, the first written
    fresh = tmp_path / "fresh"
    assert separate(a, b, "-c", checkpoint, "-o", fresh, "-q") == 1
    assert "same output file" in capsys.readouterr().err
    # without {stem}, two stems of one song would be one file: refused before anything is written
    shut = tmp_path / "one_file"
    assert separate(a, "-c", checkpoint, "-o", shut, "-q", "--filename",
                    "{model}/{track}.{ext}") == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "waveunet separate: error: --filename '{model}/{track}.{ext}': the stems accompaniment "
        f"and vocals of {a} would both be {shut / MODEL / 'song.wav'} (use {{stem}})"], err
    assert not shut.exists()
    assert separate(a, "-c", checkpoint, "-o", shut, "-q", "--filename", "{model}/{track}.{ext}",
               "--stems", "vocals") == 0  # one stem needs no {stem}
    assert files_under(shut) == sorted([MANIFEST, f"{MODEL}/song.wav"])


def test_folders_as_input_dataset_layout_and_mixture_names(tmp_path, checkpoint, synth_root):
    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    plain = tmp_path / "plain"
    write_song(plain / "b.flac")
    write_song(plain / "sub" / "a.wav")
    write_song(plain / "sub" / ".hidden.wav")
    (plain / "notes.txt").write_text("not audio")
    out = plain / "separated"  # the output folder inside an input folder: never taken
    write_song(out / MODEL / "old" / "vocals.wav")
    assert songs_in_folder(plain, out.resolve()) == [plain / "b.flac", plain / "sub" / "a.wav"]
    mixtures = songs_in_folder(data, (tmp_path / "x").resolve())
    assert mixtures == sorted(data.glob("*/*/mixture.wav"))  # no stems taken
    assert track_name(mixtures[0]) == mixtures[0].parent.name
    assert track_name(Path("musdb/test/Al James - Schoolboy Facination.stem.mp4")) == \
        "Al James - Schoolboy Facination"
    assert separate(plain, data / "test", "-c", checkpoint, "-o", out, "-q") == 0
    tracks = [p.parent.name for p in sorted((data / "test").glob("*/mixture.wav"))]
    assert files_under(out) == sorted(
        [MANIFEST, f"{MODEL}/old/vocals.wav"]
        + [f"{MODEL}/{t}/{s}.wav" for t in ["b", "a", *tracks] for s in SOURCES])


def test_formats_never_mix_silently(tmp_path, checkpoint, capsys):
    song = write_song(tmp_path / "song.wav")
    out = tmp_path / "out"
    assert separate(song, "-c", checkpoint, "-o", out, "-q") == 0
    assert separate(song, "-c", checkpoint, "-o", out, "-q", "--format", "flac") == 1
    assert "accompaniment.wav is there from an earlier run" in capsys.readouterr().err
    assert files_under(out / MODEL) == [f"song/{s}.wav" for s in SOURCES]
    assert separate(song, "-c", checkpoint, "-o", out, "-q", "--format", "flac", "--force") == 0
    assert files_under(out / MODEL) == [f"song/{s}.flac" for s in SOURCES]
    # --stems picks a subset: the other stem of the earlier format counts too
    mixed = tmp_path / "mixed"
    assert separate(song, "-c", checkpoint, "-o", mixed, "-q", "--stems", "vocals",
               "--format", "flac") == 0
    assert separate(song, "-c", checkpoint, "-o", mixed, "-q", "--stems", "accompaniment") == 1
    assert "vocals.flac is there from an earlier run" in capsys.readouterr().err
    assert files_under(mixed / MODEL) == ["song/vocals.flac"]
    assert separate(song, "-c", checkpoint, "-o", mixed, "-q", "--stems", "accompaniment",
               "--force") == 0
    assert files_under(mixed / MODEL) == ["song/accompaniment.wav"]


def test_mp3_output_and_the_48_khz_limit(tmp_path, checkpoint, capsys):
    song = write_song(tmp_path / "song.wav", tone(rate=44100, seconds=1.0), 44100)
    fast = write_song(tmp_path / "fast.wav", tone(rate=96000, seconds=0.2), 96000)
    out = tmp_path / "out"
    assert separate(fast, song, "-c", checkpoint, "-o", out, "-q", "--format", "mp3",
               "--mp3-quality", "0") == 1
    err = capsys.readouterr().err
    assert "96000 Hz cannot be stored as MP3" in err and "song.wav" not in err.splitlines()[0]
    assert files_under(out / MODEL) == [f"song/{s}.mp3" for s in SOURCES]
    for s in SOURCES:
        info = sf.info(str(out / MODEL / "song" / f"{s}.mp3"))
        assert (info.format, info.samplerate, info.channels) == ("MP3", 44100, 2)
        assert abs(info.frames - 44100) < 2 * 1152  # the encoder's padding at most
    stem, _ = sf.read(str(out / MODEL / "song" / "accompaniment.mp3"), dtype="float32")
    assert np.abs(stem).max() > 0.05  # real audio, not silence
    worse = tmp_path / "worse"
    assert separate(song, "-c", checkpoint, "-o", worse, "-q", "--format", "mp3",
               "--mp3-quality", "9") == 0
    assert (worse / MODEL / "song" / "vocals.mp3").stat().st_size < \
        (out / MODEL / "song" / "vocals.mp3").stat().st_size
    assert separate(song, "-c", checkpoint, "-o", out, "--format", "mp3", "--mp3-quality",
                    "10") == 2


def test_stems_device_threads_and_number_options(tmp_path, checkpoint, capsys, monkeypatch):
    from waveunet.separation import pipeline

    song = write_song(tmp_path / "song.wav")
    out = tmp_path / "out"
    threads, seen = torch.get_num_threads(), []
    real = pipeline.separate_files

    def separate_files(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "separate_files", separate_files)
    torch.set_num_threads(2)
    try:
        assert separate(song, "-c", checkpoint, "-o", out, "-q", "--stems", "vocals", "-d", "cpu",
                   "--threads", "1") == 0
        assert seen == [1] and torch.get_num_threads() == 2  # the caller's count restored
    finally:
        torch.set_num_threads(threads)
    assert files_under(out / MODEL) == ["song/vocals.wav"]
    bad = [(["--stems", "drums"], "the model's sources are accompaniment, vocals"),
           (["-d", "cuda:7"], "cuda:7"), (["-d", "nonsense"], "unknown 'nonsense'"),
           (["-d", "meta"], "error: -d/--device: 'meta' holds no data"),
           *([] if torch.backends.mps.is_available() else
             [(["-d", "mps"], "error: -d/--device: 'mps' is not available")]),
           (["--threads", "0"], "--threads must be >= 1"),
           (["--chunk-seconds", "nan"], "--chunk-seconds must be a finite number > 0, got nan"),
           (["--memory-gib", "inf"], "--memory-gib must be a finite number > 0, got inf"),
           (["--chunk-seconds", "-1"], "--chunk-seconds must be")]
    for options, message in bad:
        assert separate(song, "-c", checkpoint, "-o", tmp_path / "x", *options) == 2, options
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        separate("--help")
    text = capsys.readouterr().out
    assert "examples:" in text and "--precision" in text and "{model}/{track}/{stem}.{ext}" in text
