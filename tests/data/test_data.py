from __future__ import annotations

import errno
import io
import logging
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import snr_db, write_stem_mp4

from waveunet.audio import convert_channels, read_audio, resample, write_audio
from waveunet.data import Track, TrainingExamples, data_spec, load_split, make_loader, split_batch
from waveunet.data import cache as data_module
from waveunet.errors import ConfigError, DataError, DiskFullError

REPO = Path(__file__).resolve().parents[2]

FOUR = ["bass", "drums", "other", "vocals"]
VOICE = ["accompaniment", "vocals"]


def _wav(path: Path) -> np.ndarray:
    return read_audio(path)[0]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- reading formats


def test_musdb_hq_tracks_match_files_sample_exactly(synth_root: Path, make_data_cfg) -> None:
    before = _snapshot(synth_root)
    cfg = make_data_cfg("musdb_hq", synth_root, valid_tracks=["track_002"])
    train = load_split(cfg, "train", sample_rate_hz=44100, channels=2, sources=FOUR)
    assert [t.name for t in train] == ["track_000", "track_001"]
    for track in train:
        folder = synth_root / "train" / track.name
        assert isinstance(track.sources, np.memmap) and track.sources.shape == (4, 2, 88200)
        assert np.array_equal(track.mixture, _wav(folder / "mixture.wav"))
        for i, name in enumerate(FOUR):
            assert np.array_equal(track.sources[i], _wav(folder / f"{name}.wav"))
    valid = load_split(cfg, "valid", sample_rate_hz=44100, channels=2, sources=VOICE)
    assert [t.name for t in valid] == ["track_002"]
    folder = synth_root / "train" / "track_002"
    accompaniment = sum(_wav(folder / f"{s}.wav") for s in ("drums", "bass", "other"))
    assert np.allclose(valid[0].sources[0], accompaniment, atol=1e-6)
    assert np.array_equal(valid[0].sources[1], _wav(folder / "vocals.wav"))
    test = load_split(cfg, "test", sample_rate_hz=44100, channels=2, sources=VOICE)
    assert [t.name for t in test] == ["track_000"] and test[0].source_names == VOICE
    assert _snapshot(synth_root) == before  # the dataset is never written to


def test_resampled_and_downmixed_cache(synth_root: Path, make_data_cfg) -> None:
    cfg = make_data_cfg("musdb_hq", synth_root)
    (track,) = load_split(cfg, "test", sample_rate_hz=22050, channels=1, sources=["vocals"])
    vocals = _wav(synth_root / "test/track_000/vocals.wav")
    expected = resample(convert_channels(vocals, 1), 44100, 22050)
    assert track.sources.shape == (1, 1, 44100) and track.sample_rate_hz == 22050
    assert np.allclose(track.sources[0], expected, atol=1e-6)


def test_folder_dataset_with_vocals_and_accompaniment_only(tmp_path: Path, make_data_cfg) -> None:
    rng = np.random.default_rng(0)
    written = {}
    for i in range(4):
        stems = {n: (0.3 * rng.uniform(-1, 1, (2, 3000 + 100 * i))).astype(np.float32)
                 for n in ("vocals", "accompaniment")}
        stems["mixture"] = stems["vocals"] + stems["accompaniment"]
        for name, audio in stems.items():
            write_audio(tmp_path / "songs" / "train" / f"song {i}" / f"{name}.wav", audio, 44100,
                        subtype="FLOAT")
        written[f"song {i}"] = stems
    cfg = make_data_cfg("folder", tmp_path / "songs", stems=["vocals", "accompaniment"],
                        valid_fraction=0.25)
    train = load_split(cfg, "train", sample_rate_hz=44100, channels=2, sources=VOICE)
    valid = load_split(cfg, "valid", sample_rate_hz=44100, channels=2, sources=VOICE)
    assert [t.name for t in train] == ["song 0", "song 1", "song 2"]
    assert [t.name for t in valid] == ["song 3"]
    for track in train + valid:
        stems = written[track.name]
        assert np.array_equal(track.mixture, stems["mixture"])
        assert np.array_equal(track.sources[0], stems["accompaniment"])
        assert np.array_equal(track.sources[1], stems["vocals"])
    with pytest.raises(ConfigError, match="'drums' is not a stem"):
        load_split(cfg, "train", sample_rate_hz=44100, channels=2, sources=["drums", "vocals"])
    with pytest.raises(DataError, match="test"):  # no test/ folder
        load_split(cfg, "test", sample_rate_hz=44100, channels=2, sources=VOICE)


@pytest.fixture(scope="module")
def stem_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("musdb")
    written = {}
    for subset, name, seed in (("train", "Actions - One Minute Smile", 0),
                               ("train", "Some - Song", 1), ("test", "Other - Song", 2)):
        written[name] = write_stem_mp4(root / subset / f"{name}.stem.mp4", seed=seed)
    return root, written


def test_a_track_at_an_odd_rate_is_named_when_its_rate_is_approximated(
        tmp_path: Path, make_data_cfg, caplog: pytest.LogCaptureFixture) -> None:
    audio = (0.3 * np.random.default_rng(0).uniform(-1, 1, (2, 4410))).astype(np.float32)
    for name in ("vocals", "accompaniment"):
        write_audio(tmp_path / "songs" / "train" / "odd" / f"{name}.wav", audio, 44101)
    cfg = make_data_cfg("folder", tmp_path / "songs", stems=["vocals", "accompaniment"])
    with caplog.at_level(logging.WARNING, logger="waveunet"):
        (track,) = load_split(cfg, "train", sample_rate_hz=22050, channels=2, sources=VOICE)
    assert track.samples == 2205  # 44,101 Hz treated as 44,100 Hz
    notes = sorted(r.getMessage() for r in caplog.records if "treated as" in r.getMessage())
    assert len(notes) == 2  # one per file, each named
    for note, name in zip(notes, ("accompaniment", "vocals"), strict=True):
        assert note.startswith(f"track 'odd': {tmp_path / 'songs/train/odd' / name}.wav: ")


def test_musdb_stem_mp4_with_official_validation(stem_root, make_data_cfg) -> None:
    root, written = stem_root
    cfg = make_data_cfg("musdb", root)
    train = load_split(cfg, "train", sample_rate_hz=44100, channels=2, sources=FOUR)
    valid = load_split(cfg, "valid", sample_rate_hz=44100, channels=2, sources=VOICE)
    assert [t.name for t in train] == ["Some - Song"]
    # an official MUSDB18 validation name
    assert [t.name for t in valid] == ["Actions - One Minute Smile"]
    stream = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
    for track in train:
        data = written[track.name]
        n = data.shape[1]
        assert track.samples >= n  # AAC pads the end
        assert snr_db(data[0].T, track.mixture[:, :n]) > 15  # lossy, but aligned sample-exactly
        for i, name in enumerate(FOUR):
            assert snr_db(data[stream[name]].T, track.sources[i, :, :n]) > 15, name
    acc = written["Actions - One Minute Smile"][1:4].sum(0).T
    assert snr_db(acc, valid[0].sources[0, :, : acc.shape[1]]) > 15


def test_preview_downloads_once_through_musdb(tmp_path: Path, make_data_cfg,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import musdb

    calls = []

    def fake_download(self, progress: bool = True, suffix: str = ".zip") -> None:
        # Stands in for the network: what musdb's download leaves in its root.
        calls.append(self.root)
        write_stem_mp4(Path(self.root) / "train" / "Leaf - Summerghost.stem.mp4", seconds=0.5)
        write_stem_mp4(Path(self.root) / "train" / "A - B.stem.mp4", seconds=0.5, seed=3)
        write_stem_mp4(Path(self.root) / "test" / "C - D.stem.mp4", seconds=0.5, seed=4)

    monkeypatch.setattr(musdb.DB, "download", fake_download)
    root = tmp_path / "MUSDB18-7"
    cfg = make_data_cfg("preview", root)
    valid = load_split(cfg, "valid", sample_rate_hz=22050, channels=2, sources=VOICE)
    train = load_split(cfg, "train", sample_rate_hz=22050, channels=2, sources=VOICE)
    assert [t.name for t in valid] == ["Leaf - Summerghost"]
    assert [t.name for t in train] == ["A - B"]
    assert len(calls) == 1 and (root / "test" / "C - D.stem.mp4").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_synthetic_dataset_is_generated_on_first_use(tmp_path: Path, make_data_cfg) -> None:
    cfg = make_data_cfg("synthetic", tmp_path / "synth", tracks=2, test_tracks=1, seconds=1.0,
                        seed=0, valid_fraction=0.5)
    train = load_split(cfg, "train", sample_rate_hz=22050, channels=2, sources=VOICE)
    valid = load_split(cfg, "valid", sample_rate_hz=22050, channels=2, sources=VOICE)
    assert [t.name for t in train] == ["track_000"] and [t.name for t in valid] == ["track_001"]
    assert (tmp_path / "synth" / "synth.json").is_file()


def test_synthetic_dataset_with_other_settings_is_refused(tmp_path: Path, make_data_cfg) -> None:
    root = tmp_path / "synth"
    base = dict(tracks=2, test_tracks=1, seconds=1.0, seed=0, valid_fraction=0.5)
    load_split(make_data_cfg("synthetic", root, **base), "test", sample_rate_hz=22050, channels=2,
               sources=VOICE)
    for change in ({"seed": 1}, {"test_tracks": 2}, {"seconds": 2.0}, {"tracks": 3}):
        cfg = make_data_cfg("synthetic", root, **{**base, **change})
        with pytest.raises(ConfigError, match=r"synth\.json"):
            load_split(cfg, "test", sample_rate_hz=22050, channels=2, sources=VOICE)
    # the same settings (test_tracks left to its default, here 1) reuse it
    same = make_data_cfg("synthetic", root, **{**base, "test_tracks": None})
    assert len(load_split(same, "test", sample_rate_hz=22050, channels=2, sources=VOICE)) == 1


def test_synthetic_root_name_holds_every_setting() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "configs" / "data" / "synthetic.yaml")
    cfg.cache_dir = "/cache"
    settings = f"{cfg.tracks}+{cfg.test_tracks}x{cfg.seconds}s-seed{cfg.seed}"
    assert cfg.root == f"/cache/synthetic-{settings}"


def test_empty_fraction_validation_split_names_the_fraction(synth_root: Path,
                                                            make_data_cfg) -> None:
    with pytest.raises(DataError, match=r"data\.valid_fraction=0\.0 gives 0 of 3 tracks") as info:
        _load(make_data_cfg("folder", synth_root, stems=FOUR, valid_fraction=0.0), "valid")
    assert "MUSDB" not in str(info.value)


def test_sum_stems_adds_in_place_like_np_sum() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((2, 100)).astype(np.float32) for _ in range(3)]
    total = data_module._sum_stems(parts)
    np.testing.assert_array_equal(total, np.sum(parts, axis=0, dtype=np.float32))
    assert total is not parts[0] and not np.shares_memory(total, parts[0])


# --------------------------------------------------------------------------- cache


def test_cache_reused_rebuilt_when_source_changes(tmp_path: Path, synth_root: Path, make_data_cfg,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = _copy(synth_root, tmp_path / "data")
    cfg = make_data_cfg("musdb_hq", root)
    built = []
    real_build = data_module._build_track
    monkeypatch.setattr(data_module, "_build_track",
                        lambda found, *a: built.append(found.name) or real_build(found, *a))
    load_split(cfg, "train", sample_rate_hz=44100, channels=2, sources=FOUR)
    assert built == ["track_000", "track_001", "track_002"]
    load_split(cfg, "train", sample_rate_hz=44100, channels=2, sources=FOUR)
    assert len(built) == 3  # reused
    load_split(cfg, "train", sample_rate_hz=22050, channels=2, sources=FOUR)
    assert len(built) == 6  # another sample rate is another cache

    bass = root / "train" / "track_001" / "bass.wav"
    write_audio(bass, 0.5 * _wav(bass), 44100, subtype="FLOAT", overwrite=True)
    tracks = load_split(cfg, "train", sample_rate_hz=44100, channels=2, sources=FOUR)
    assert built[6:] == ["track_001"]
    assert np.array_equal(tracks[1].sources[0], _wav(bass))


def test_interrupted_build_is_detected_and_redone(tmp_path: Path, synth_root: Path, make_data_cfg,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_data_cfg("musdb_hq", synth_root)
    real_build = data_module._build_track
    built = []

    def dies_on_second(found, fmt, plan, npy, *args):
        built.append(found.name)
        if len(built) == 2:
            # Half a cache file, as a killed process leaves it: the array is written, the
            # manifest is not.
            np.save(npy, np.zeros((3, 2, 10), dtype=np.float32))
            raise KeyboardInterrupt
        return real_build(found, fmt, plan, npy, *args)

    monkeypatch.setattr(data_module, "_build_track", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        load_split(cfg, "train", sample_rate_hz=44100, channels=2, sources=VOICE)
    cache = next((tmp_path / "cache").iterdir())
    (cache / ".stale.npy.pid999999999.tmp.npy").write_bytes(b"left by a killed build")
    built.clear()
    monkeypatch.setattr(data_module, "_build_track",
                        lambda found, *a: built.append(found.name) or real_build(found, *a))
    tracks = load_split(cfg, "train", sample_rate_hz=44100, channels=2, sources=VOICE)
    assert built == ["track_001", "track_002"]  # the finished track is kept, the rest redone
    assert np.array_equal(tracks[1].mixture, _wav(synth_root / "train/track_001/mixture.wav"))
    assert not list(cache.glob(".*tmp*"))

    # A truncated cache file with its manifest intact is caught too.
    npy = Path(tracks[2].cache_path)
    del tracks
    with open(npy, "r+b") as f:
        f.truncate(1000)
    built.clear()
    load_split(cfg, "train", sample_rate_hz=44100, channels=2, sources=VOICE)
    assert built == ["track_002"]


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FillsUp(io.FileIO):
    """A file whose writes fail as on a full disk once ``room`` bytes are written."""

    room = 100_000

    def write(self, data) -> int:
        if self.tell() + len(memoryview(data)) > self.room:
            _no_space()
        return super().write(data)


def test_a_full_disk_while_decoding_is_one_line_naming_the_cache_file(
        tmp_path: Path, synth_root: Path, make_data_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_data_cfg("musdb_hq", synth_root)
    monkeypatch.setattr(data_module, "open", lambda path, mode="r": _FillsUp(path, mode[0]),
                        raising=False)
    with pytest.raises(DiskFullError) as caught:
        load_split(cfg, "test", sample_rate_hz=44100, channels=2, sources=VOICE)
    cache = next((tmp_path / "cache").iterdir())
    npy = Path(caught.value.path)
    assert npy.parent == cache and npy.suffix == ".npy" and caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"cannot write {npy}: no space (the disk is full)"
    assert sorted(p.name for p in cache.iterdir()) == ["cache.json"]  # no temporary, no array

    monkeypatch.undo()  # space again: the track is decoded as if nothing had happened
    (track,) = load_split(cfg, "test", sample_rate_hz=44100, channels=2, sources=VOICE)
    assert np.array_equal(track.mixture, _wav(synth_root / "test/track_000/mixture.wav"))


def test_a_full_tmpfs_while_decoding_is_one_line_not_a_crash(tmp_path: Path,
                                                              synth_root: Path) -> None:
    """A real full file system: a 1 MiB tmpfs (in a private mount namespace; skipped where
    mounting is not allowed) under the cache. A memory-mapped write into a sparse file there
    would die of SIGBUS (exit 135)."""
    unshare = shutil.which("unshare")
    cache = tmp_path / "cache"
    cache.mkdir()
    probe = unshare and subprocess.run(
        [unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {cache}"],
        capture_output=True)
    if not probe or probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    load = (
        "import sys; from waveunet.data import load_split; "
        "from waveunet.errors import DiskFullError\n"
        f"cfg = dict(name='musdb_hq', format='musdb_hq', root={str(synth_root)!r}, "
        f"cache_dir={str(cache)!r})\n"
        "try:\n"
        f"    load_split(cfg, 'test', sample_rate_hz=44100, channels=2, sources={VOICE!r})\n"
        "except DiskFullError as exc:\n"
        "    print(exc); sys.exit(3)\n")
    # The tmpfs lives as long as the namespace: list what it holds before it goes.
    script = (f"mount -t tmpfs -o size=1m tmpfs {cache} || exit 99; "
              f"{sys.executable} -c \"$LOAD\"; rc=$?; ls -A {cache}/*; exit $rc")
    env = {**os.environ, "LOAD": load, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([unshare, "-rm", "sh", "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    message, *left = proc.stdout.splitlines()
    assert message.startswith(f"cannot write {cache}/") and message.endswith(
        ".npy: no space (the disk is full)"), message
    assert left == ["cache.json"]  # no temporary, no half array


def test_cache_dir_inside_dataset_is_refused(tmp_path: Path, synth_root: Path,
                                             make_data_cfg) -> None:
    cfg = make_data_cfg("musdb_hq", synth_root, cache_dir=str(synth_root / "cache"))
    with pytest.raises(ConfigError, match="inside the dataset"):
        load_split(cfg, "test", sample_rate_hz=44100, channels=2, sources=VOICE)
    assert not (synth_root / "cache").exists()


def test_asking_for_the_cache_folder_creates_nothing(tmp_path: Path, synth_root: Path,
                                                     make_data_cfg) -> None:
    spec = data_spec(make_data_cfg("musdb_hq", synth_root)).datasets[0]
    folder = data_module.cache_folder(spec, synth_root, 44100, 2, VOICE, create=False)
    assert folder.parent == tmp_path / "cache" and not (tmp_path / "cache").exists()
    assert data_module.cache_folder(spec, synth_root, 44100, 2, VOICE) == folder
    assert (folder / "cache.json").is_file()


def test_track_pickles_by_reference(synth_root: Path, make_data_cfg) -> None:
    (track,) = load_split(make_data_cfg("musdb_hq", synth_root), "test", sample_rate_hz=44100,
                          channels=2, sources=FOUR)
    blob = pickle.dumps(track)
    assert len(blob) < 10_000  # the path, not the audio
    back = pickle.loads(blob)
    assert isinstance(back.sources, np.memmap) and np.array_equal(back.sources, track.sources)


# --------------------------------------------------------------------------- bad datasets


@pytest.fixture
def bad_root(tmp_path: Path, synth_root: Path) -> Path:
    return _copy(synth_root, tmp_path / "bad")


def _load(cfg, split: str = "train") -> list[Track]:
    return load_split(cfg, split, sample_rate_hz=44100, channels=2, sources=FOUR)


def test_missing_root_and_empty_split(tmp_path: Path, make_data_cfg) -> None:
    with pytest.raises(DataError, match="nowhere"):
        _load(make_data_cfg("musdb_hq", tmp_path / "nowhere"))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="split 'train'.*no tracks"):
        _load(make_data_cfg("musdb_hq", tmp_path / "empty"))
    with pytest.raises(ConfigError, match="root is not set"):
        _load(make_data_cfg("musdb_hq", None))


def test_empty_official_validation_split(synth_root: Path, make_data_cfg) -> None:
    with pytest.raises(DataError, match="valid_tracks"):
        _load(make_data_cfg("musdb_hq", synth_root), "valid")
    with pytest.raises(ConfigError, match="no_such_track"):
        _load(make_data_cfg("musdb_hq", synth_root, valid_tracks=["no_such_track"]), "valid")


def test_missing_stem(bad_root: Path, make_data_cfg) -> None:
    (bad_root / "train" / "track_001" / "bass.wav").unlink()
    with pytest.raises(DataError, match=r"track_001.*bass\.wav"):
        _load(make_data_cfg("musdb_hq", bad_root))


def test_stems_of_different_length_or_rate(bad_root: Path, make_data_cfg) -> None:
    drums = bad_root / "train" / "track_000" / "drums.wav"
    write_audio(drums, _wav(drums)[:, :-5], 44100, subtype="FLOAT", overwrite=True)
    with pytest.raises(DataError, match=r"track_000.*drums\.wav has 88195 samples"):
        _load(make_data_cfg("musdb_hq", bad_root))
    write_audio(drums, _wav(drums), 48000, subtype="FLOAT", overwrite=True)
    with pytest.raises(DataError, match=r"track_000.*drums\.wav is at 48000 Hz"):
        _load(make_data_cfg("musdb_hq", bad_root))


def test_corrupt_file(bad_root: Path, make_data_cfg) -> None:
    other = bad_root / "train" / "track_002" / "other.wav"
    other.write_bytes(other.read_bytes()[:30])  # a truncated header
    with pytest.raises(DataError, match=r"track_002.*other\.wav"):
        _load(make_data_cfg("musdb_hq", bad_root))


def test_silent_track_warns(bad_root: Path, make_data_cfg) -> None:
    folder = bad_root / "test" / "track_000"
    for name in ("mixture", "vocals", "drums", "bass", "other"):
        write_audio(folder / f"{name}.wav", np.zeros((2, 1000), np.float32), 44100, overwrite=True)
    with pytest.warns(UserWarning, match="track_000.*silent"):
        _load(make_data_cfg("musdb_hq", bad_root), "test")


def test_bad_config_values(synth_root: Path, make_data_cfg) -> None:
    with pytest.raises(ConfigError, match="musdb_hq"):
        _load(make_data_cfg("mp3s", synth_root))
    with pytest.raises(ConfigError, match="split"):
        _load(make_data_cfg("musdb_hq", synth_root), "validation")
    with pytest.raises(ConfigError, match="stems"):
        _load(make_data_cfg("folder", synth_root))


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("seconds", math.nan, "data.seconds must be a finite number >= 1 (a generated track must be "
                          "at least 1 s long, and as long as the model's input), got nan"),
    ("seconds", math.inf, "data.seconds must be a finite number >= 1"),
    ("seconds", 0.001, "data.seconds must be a finite number >= 1"),
    ("tracks", 0, "data.tracks must be an integer >= 1, got 0"),
    ("seed", math.inf, "data.seed must be an integer in [0, 4294967295], got inf"),
    ("valid_fraction", math.nan, "data.valid_fraction must be a finite number in [0, 1), got nan"),
    ("valid_seed", math.inf, "data.valid_seed must be an integer in [0, 4294967295], got inf"),
    ("weight", math.nan, "data.weight must be a finite number >= 0, got nan"),
    ("sampling", "foo", "data.sampling: unknown 'foo' (choose from per_second, per_track)"),
])
def test_a_bad_number_is_one_line_naming_the_setting_before_anything_is_generated(
        tmp_path: Path, make_data_cfg, setting: str, value, message: str) -> None:
    root = tmp_path / "synthetic"
    cfg = make_data_cfg("synthetic", root, **{"tracks": 2, "test_tracks": 1, "seconds": 1.0,
                                              "seed": 0, setting: value})
    with pytest.raises(ConfigError) as caught:
        _load(cfg)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert not root.exists() and not (tmp_path / "cache").exists()


def test_nan_from_the_command_line_is_refused_by_the_data_spec(tmp_path: Path) -> None:
    from waveunet.settings.compose import compose

    for override, named in (("data.seconds=nan", "data.seconds"),
                            ("data.seconds=inf", "data.seconds"),
                            ("data.valid_fraction=nan", "data.valid_fraction")):
        cfg = compose("train", ["experiment=demo", override, f"data.cache_dir={tmp_path}"]).data
        with pytest.raises(ConfigError, match=f"^{re.escape(named)} must be a finite number"):
            data_spec(cfg)


def test_all_weights_zero_is_refused_naming_the_setting(make_data_cfg, synth_root: Path) -> None:
    with pytest.raises(ConfigError, match=r"every training dataset has weight 0 "
                                          r"\(data\.weight=0\)"):
        data_spec(make_data_cfg("musdb_hq", synth_root, weight=0))


# --------------------------------------------------------------------------- training examples


def _fake_track(name: str, samples: int, sources: int = 2) -> Track:
    ramp = np.arange(samples, dtype=np.float32)
    stems = np.stack([np.stack([ramp + 1e6 * s, -ramp]) for s in range(sources)])
    return Track(name, stems.sum(0), stems, [f"s{s}" for s in range(sources)], 22050)


def test_examples_are_crops_uniform_over_positions() -> None:
    tracks = [_fake_track("short", 1099), _fake_track("long", 3099)]
    ds = TrainingExamples(tracks, input_samples=100, examples_per_epoch=4000, seed=3)
    counts = np.zeros(2)
    for i in range(len(ds)):
        track, start = ds.locate(i)
        counts[track] += 1
        if i < 50:
            example = ds[i]
            assert example.shape == (2, 2, 100) and example.dtype == torch.float32
            crop = tracks[track].sources[:, :, start:start + 100]
            assert torch.equal(example, torch.from_numpy(crop))
    # 1000 vs 3000 positions: a quarter of the examples come from the short track.
    assert abs(counts[0] / counts.sum() - 0.25) < 0.03
    starts = [ds.locate(i)[1] for i in range(len(ds)) if ds.locate(i)[0] == 0]
    assert min(starts) < 50 and max(starts) > 950 and max(starts) <= 999


def test_examples_deterministic_per_seed_epoch_index() -> None:
    tracks = [_fake_track("a", 5000)]
    a = TrainingExamples(tracks, 64, 20, seed=1)
    b = TrainingExamples(tracks, 64, 20, seed=1)
    assert all(torch.equal(a[i], b[i]) for i in range(20))
    epoch0 = [a[i] for i in range(20)]
    a.set_epoch(1)
    assert not all(torch.equal(x, a[i]) for i, x in enumerate(epoch0))
    b.set_epoch(1)
    assert all(torch.equal(a[i], b[i]) for i in range(20))
    other_seed = TrainingExamples(tracks, 64, 20, seed=2)
    assert not all(torch.equal(other_seed[i], x) for i, x in enumerate(epoch0))
    with pytest.raises(IndexError):
        a[20]


def _locate_before_weights(tracks: list[Track], input_samples: int, seed: int, epoch: int,
                           index: int) -> tuple[int, int]:
    """How TrainingExamples drew an example before sampling weights existed (a copy, kept as the
    reference): uniform over all start positions of all tracks."""
    positions = np.array([max(t.samples - input_samples + 1, 1) for t in tracks])
    ends = np.cumsum(positions)
    position = int(np.random.default_rng([seed, epoch, index]).integers(int(ends[-1])))
    track = int(np.searchsorted(ends, position, side="right"))
    return track, position - (int(ends[track - 1]) if track else 0)


@pytest.mark.parametrize("weight", [1.0, 2.5])
def test_default_sampling_draws_the_same_examples_as_before(weight: float) -> None:
    tracks = [_fake_track("a", 1099), _fake_track("b", 3099), _fake_track("tiny", 10),
              _fake_track("c", 777)]
    for track in tracks:  # equal weights are the default draw, whatever their value
        track.weight, track.dataset = weight, "d"
    ds = TrainingExamples(tracks, input_samples=100, examples_per_epoch=500, seed=7)
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        for i in range(500):
            assert ds.locate(i) == _locate_before_weights(tracks, 100, 7, epoch, i)


def test_per_track_sampling_draws_each_track_equally() -> None:
    tracks = [_fake_track("short", 300), _fake_track("long", 30_000)]
    for track in tracks:
        track.sampling = "per_track"
    ds = TrainingExamples(tracks, input_samples=100, examples_per_epoch=4000, seed=0)
    located = [ds.locate(i) for i in range(len(ds))]
    short = sum(t == 0 for t, _ in located)
    # 4.5 standard deviations of a fair coin over 4000 draws (per second would give ~0.7 %).
    assert abs(short - 2000) <= 4.5 * math.sqrt(4000 * 0.25)
    assert max(s for t, s in located if t == 0) <= 200  # starts stay inside each track
    assert max(s for t, s in located if t == 1) > 20_000
    np.testing.assert_allclose(ds.track_probabilities(), [0.5, 0.5])
    # Still a pure function of (seed, epoch, index): a resumed run draws the same.
    again = TrainingExamples(tracks, input_samples=100, examples_per_epoch=4000, seed=0)
    again.set_epoch(2)
    ds.set_epoch(2)
    assert [again.locate(i) for i in range(100)] == [ds.locate(i) for i in range(100)]
    assert [ds.locate(i) for i in range(100)] != located[:100]


def test_weighted_sampling_gives_zero_weight_tracks_no_examples() -> None:
    tracks = [_fake_track("a", 500), _fake_track("b", 500), _fake_track("c", 500)]
    tracks[2].weight = 0.0
    ds = TrainingExamples(tracks, input_samples=100, examples_per_epoch=1000, seed=0)
    assert {ds.locate(i)[0] for i in range(1000)} == {0, 1}
    tracks[0].weight = tracks[1].weight = 0.0
    with pytest.raises(ConfigError, match="not all 0"):
        TrainingExamples(tracks, input_samples=100, examples_per_epoch=10, seed=0)


def test_tracks_that_cannot_share_a_batch_are_refused() -> None:
    a, b = _fake_track("a", 500), _fake_track("b", 500, sources=3)
    a.dataset, b.dataset = "musdb", "other"
    with pytest.raises(ConfigError, match=r"disagree on sources: 'a' \(musdb\) has s0, s1, "
                                          r"'b' \(other\) has s0, s1, s2"):
        TrainingExamples([a, b], 100, 10, seed=0)
    c = _fake_track("c", 500)
    c.sample_rate_hz = 44100
    with pytest.raises(ConfigError,
                       match="disagree on sample rate: 'a' .* 22050 Hz, 'c' has 44100 Hz"):
        TrainingExamples([a, c], 100, 10, seed=0)


def test_short_track_is_zero_padded() -> None:
    ds = TrainingExamples([_fake_track("tiny", 10)], input_samples=16, examples_per_epoch=1, seed=0)
    example = ds[0]
    assert example.shape == (2, 2, 16)
    assert torch.equal(example[0, 1, 3:13], -torch.arange(10, dtype=torch.float32))
    assert not example[:, :, :3].any() and not example[:, :, 13:].any()


def test_split_batch() -> None:
    stems = torch.randn(3, 2, 2, 20)
    mixture, targets = split_batch(stems, 10)
    assert torch.equal(mixture, stems.sum(1))
    assert torch.equal(targets, stems[..., 5:15])
    with pytest.raises(ConfigError, match="even"):
        split_batch(stems, 11)
    with pytest.raises(ConfigError):
        split_batch(stems, 21)


def test_loader_workers_follow_set_epoch(synth_root: Path, make_data_cfg) -> None:
    tracks = load_split(make_data_cfg("musdb_hq", synth_root), "train", sample_rate_hz=22050,
                        channels=2, sources=VOICE)
    ds = TrainingExamples(tracks, input_samples=1000, examples_per_epoch=8, seed=0)
    loader = make_loader(ds, 4, workers=1, shuffle=False, seed=0)
    assert loader.persistent_workers and len(loader) == 2
    for epoch in range(2):
        ds.set_epoch(epoch)
        batches = torch.cat(list(loader))
        expected = torch.stack([ds[i] for i in range(8)])
        assert batches.shape == (8, 2, 2, 1000) and torch.equal(batches, expected)
    ds.set_epoch(0)
    assert not torch.equal(torch.stack([ds[i] for i in range(8)]), batches)
    # A plain DataLoader (default_collate) gets the same batches, only slower.
    ds.set_epoch(1)
    plain = torch.cat(list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0)))
    assert torch.equal(plain, batches)


def test_loader_shuffle_and_distributed_samplers(tmp_path: Path) -> None:
    import torch.distributed as dist

    ds = TrainingExamples([_fake_track("a", 500)], 10, 10, seed=0)
    shuffled = make_loader(ds, 5, workers=0, shuffle=True, seed=0)
    assert shuffled.drop_last and sorted(shuffled.sampler) == list(range(10))
    fresh = [list(make_loader(ds, 5, workers=0, shuffle=True, seed=0).sampler) for _ in range(2)]
    assert fresh[0] == fresh[1] != list(range(10))  # seeded, not the identity order
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        loader = make_loader(ds, 5, workers=0, shuffle=False, seed=0, distributed=True)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        assert list(loader.sampler) == list(range(10))
    finally:
        dist.destroy_process_group()
