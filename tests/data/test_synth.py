from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from waveunet.audio import read_audio
from waveunet.data.synth import STEMS, generate_dataset, generate_track, main
from waveunet.errors import ConfigError, DataError


def _read_track(folder: Path) -> dict[str, np.ndarray]:
    return {name: read_audio(folder / f"{name}.wav")[0] for name in (*STEMS, "mixture")}


def test_layout_format_and_exact_sums(synth_root: Path) -> None:
    folders = sorted((synth_root / "train").iterdir()) + sorted((synth_root / "test").iterdir())
    assert [f.parent.name for f in folders] == ["train"] * 3 + ["test"]
    peaks = []
    for folder in folders:
        info = sf.info(str(folder / "mixture.wav"))
        got = (info.samplerate, info.channels, info.frames, info.subtype)
        assert got == (44100, 2, 88200, "FLOAT")
        audio = _read_track(folder)
        stem_sum = np.sum([audio[s].astype(np.float64) for s in STEMS], axis=0)
        assert np.max(np.abs(audio["mixture"] - stem_sum)) < 1e-6
        assert np.max(np.abs(audio["mixture"])) <= 1.0
        for stem in STEMS:
            assert np.sqrt(np.mean(audio[stem] ** 2)) > 1e-3, (folder, stem)
        peaks.append(np.max(np.abs(audio["mixture"])))
    assert max(peaks) >= 0.98  # near-full-scale mixtures are included
    assert min(peaks) < 0.9


def test_accompaniment_only_passages() -> None:
    audio = generate_track([3, 0, 0], 4.0, 44100, loud=True)
    silent_vocals = np.all(audio["vocals"] == 0, axis=0)
    # The intro (20-35 % of the track) and rests have no voice: there mixture == accompaniment.
    assert silent_vocals[: int(0.2 * 4 * 44100)].all()
    assert 0.2 < silent_vocals.mean() < 0.8
    accompaniment = audio["drums"] + audio["bass"] + audio["other"]
    gap = audio["mixture"][:, silent_vocals] - accompaniment[:, silent_vocals]
    assert np.max(np.abs(gap)) < 1e-6
    assert np.max(np.abs(audio["mixture"])) == pytest.approx(0.99, abs=1e-6)


def test_stems_sound_like_their_instruments() -> None:
    audio = generate_track([5, 0, 0], 3.0, 44100, loud=False)
    freqs = np.fft.rfftfreq(3 * 44100, 1 / 44100)

    def centroid(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x.mean(0)))
        return float(np.sum(freqs * spectrum) / np.sum(spectrum))

    assert centroid(audio["bass"]) < centroid(audio["other"]) < centroid(audio["drums"])
    # Drums are percussive: a high crest factor.
    drums = audio["drums"].mean(0)
    assert np.max(np.abs(drums)) / np.sqrt(np.mean(drums**2)) > 4


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", tracks=1, seconds=1.0, seed=7, test_tracks=1)
    b = generate_dataset(tmp_path / "b", tracks=1, seconds=1.0, seed=7, test_tracks=1)
    c = generate_dataset(tmp_path / "c", tracks=1, seconds=1.0, seed=8, test_tracks=1)
    for rel in ("train/track_000/mixture.wav", "test/track_000/vocals.wav"):
        x, y, z = (read_audio(root / rel)[0] for root in (a, b, c))
        # Equal up to a float32 ulp (numpy's SIMD sin/exp may differ in the last bit between runs).
        assert np.max(np.abs(x - y)) <= 1e-7 and np.mean(x != y) < 1e-3
        assert np.max(np.abs(x - z)) > 0.1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folders left


def test_cli_refuses_non_empty_dir_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "data"
    args = ["--out", str(out), "--tracks", "1", "--seconds", "0.5"]
    assert main([*args, "--seed", "0", "--test-tracks", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["synth.json", "test", "train"]
    keep = out / "notes.txt"
    keep.write_text("mine")
    with pytest.raises(DataError, match="non-empty"):
        main(["--out", str(out), "--tracks", "1", "--seconds", "0.5", "--seed", "1"])
    assert main([*args, "--seed", "1", "--force"]) == 0
    assert keep.read_text() == "mine"
    assert "wrote" in capsys.readouterr().out


def test_generates_into_existing_empty_dir(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    generate_dataset(out, tracks=1, seconds=0.5, seed=0)
    assert (out / "train" / "track_000" / "mixture.wav").is_file()


def test_cli_shows_progress_per_track(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--out", str(tmp_path / "a"), "--tracks", "2", "--test-tracks", "1",
                 "--seconds", "0.3"]) == 0
    err = capsys.readouterr().err
    assert "synth: 100%" in err and "3/3 [" in err  # 2 train + 1 test tracks
    assert main(["--out", str(tmp_path / "b"), "--tracks", "2", "--seconds", "0.3", "-q"]) == 0
    assert "synth:" not in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--seconds", "nan"], "--seconds must be a finite number > 0, got nan"),
    (["--seconds", "inf"], "--seconds must be a finite number > 0, got inf"),
    (["--seconds", "0"], "--seconds must be a finite number > 0, got 0.0"),
    (["--tracks", "0"], "--tracks must be an integer >= 1, got 0"),
    (["--test-tracks", "-1"], "--test-tracks must be null or an integer >= 0, got -1"),
])
def test_bad_numbers_are_one_line_naming_the_option(tmp_path: Path, args, message) -> None:
    with pytest.raises(ConfigError) as caught:
        main(["--out", str(tmp_path / "out"), *args])
    assert str(caught.value) == message
    assert not any(tmp_path.iterdir())  # nothing generated
    with pytest.raises(ConfigError, match="synth: seconds must be a finite number > 0, got nan"):
        generate_dataset(tmp_path / "py", tracks=1, seconds=math.nan, seed=0)
