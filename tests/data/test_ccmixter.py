"""CCMixter and combined datasets: the file mapping, splits, sampling weights, recipes, bad data.

Everything runs on generated audio: a CCMixter-layout folder (song folders named like the
real corpus, with spaces, parentheses and underscores) and the session's MUSDB18-HQ-layout
dataset (``synth_root``: 3 training tracks and 1 test track of 2 s).
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_stem_mp4

from waveunet.audio import read_audio, write_audio
from waveunet.data import TrainingExamples, load_split, make_loader
from waveunet.data.synth import generate_track
from waveunet.errors import ConfigError, DataError
from waveunet.settings.compose import compose

REPO = Path(__file__).resolve().parents[2]
VOICE = ["accompaniment", "vocals"]
FOUR = ["bass", "drums", "other", "vocals"]
SONGS = (
    "AlexBeroza_-_To_Be_Sensitive_(with_mindmapthat)",
    "Anna Blue - Dreams (feat. X_Y)",
    "Fortadelis_-_Lullaby (live)",
    "zeroPoint_-_Sky_(remix) 2",
)
SONG_SECONDS = 0.5  # shorter than the MUSDB18-HQ tracks (2 s): per-second and per-track differ


def write_ccmixter(root: Path, *, seconds: float = SONG_SECONDS, rate_hz: int = 44100,
                   seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """A CCMixter-layout corpus: <root>/<song>/{mix,source-01,source-02}.wav; returns the audio."""
    written = {}
    for i, song in enumerate(SONGS):
        stems = generate_track([seed, 7, i], seconds, rate_hz, loud=False)
        accompaniment = (stems["drums"] + stems["bass"] + stems["other"]).astype(np.float32)
        files = {"source-01": accompaniment, "source-02": stems["vocals"],
                 "mix": (accompaniment + stems["vocals"]).astype(np.float32)}
        for name, audio in files.items():
            write_audio(root / song / f"{name}.wav", audio, rate_hz, subtype="FLOAT")
        written[song] = files
    return written


@pytest.fixture(scope="module")
def ccmixter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ccmixter") / "ccMixter corpus"
    return root, write_ccmixter(root)


def data_cfg(tmp_path: Path, preset: str, *overrides: str):
    """The composed data config of a preset, with its cache under this test's folder."""
    return compose("train", [f"data={preset}", f"data.cache_dir={tmp_path / 'cache'}",
                             *overrides]).data


def combined(tmp_path: Path, musdb_root: Path, ccmixter_root: Path | None, *overrides: str):
    roots = [f"data.root={musdb_root}"]
    if ccmixter_root is not None:
        roots.append(f"data.ccmixter_root={ccmixter_root}")
    return data_cfg(tmp_path, "musdb_hq_ccmixter", *roots, *overrides)


def _load(cfg, split: str, sources=VOICE, rate_hz: int = 44100):
    return load_split(cfg, split, sample_rate_hz=rate_hz, channels=2, sources=sources)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


# --------------------------------------------------------------------------- CCMixter alone


def test_ccmixter_layout_is_read_through_the_file_mapping(tmp_path: Path, ccmixter) -> None:
    root, written = ccmixter
    before = _snapshot(root)
    cfg = data_cfg(tmp_path, "ccmixter", f"data.root={root}", "data.valid_fraction=0.25")
    train, valid = _load(cfg, "train"), _load(cfg, "valid")
    assert [t.name for t in train] == sorted(SONGS)[:3]
    assert [t.name for t in valid] == [sorted(SONGS)[-1]]  # 'zeroPoint...' sorts last
    for track in train + valid:
        files = written[track.name]
        assert track.sources.shape == (2, 2, int(SONG_SECONDS * 44100))
        assert np.array_equal(track.mixture, files["mix"])
        assert np.array_equal(track.sources[0], files["source-01"])  # accompaniment
        assert np.array_equal(track.sources[1], files["source-02"])  # vocals
        assert track.dataset == "ccmixter"
    # Sources in another order, or one of them, come from the same files.
    (song,) = _load(cfg, "valid", sources=["vocals", "accompaniment"])
    assert np.array_equal(song.sources[0], written[song.name]["source-02"])
    with pytest.raises(DataError, match=r"no test songs \(data\.subsets\.test is null"):
        _load(cfg, "test")
    with pytest.raises(ConfigError, match="'bass' is not a stem"):
        _load(cfg, "train", sources=FOUR)
    assert _snapshot(root) == before  # the corpus is only read


def test_ccmixter_song_missing_a_file(tmp_path: Path, ccmixter) -> None:
    root = shutil.copytree(ccmixter[0], tmp_path / "cc")
    (root / SONGS[1] / "source-02.wav").unlink()
    with pytest.raises(DataError, match=re.escape(f"track '{SONGS[1]}'") + r".*source-02\.wav"):
        _load(data_cfg(tmp_path, "ccmixter", f"data.root={root}"), "train")


def test_ccmixter_files_of_different_lengths(tmp_path: Path, ccmixter) -> None:
    root = shutil.copytree(ccmixter[0], tmp_path / "cc")
    instrumental = root / SONGS[2] / "source-01.wav"
    write_audio(instrumental, read_audio(instrumental)[0][:, :-100], 44100, subtype="FLOAT",
                overwrite=True)
    expected = (re.escape(f"track '{SONGS[2]}'")
                + r": .*mix\.wav has 22050 samples but source-01\.wav has 21950")
    with pytest.raises(DataError, match=expected):
        _load(data_cfg(tmp_path, "ccmixter", f"data.root={root}"), "train")


def test_mapping_that_names_a_missing_file(tmp_path: Path, ccmixter) -> None:
    cfg = data_cfg(tmp_path, "ccmixter", f"data.root={ccmixter[0]}", "data.files.vocals=source-2")
    first = sorted(SONGS)[0]
    with pytest.raises(DataError, match=re.escape(f"track '{first}': missing stem file")
                       + r".*source-2\.wav.*data\.files maps vocals to 'source-2'"):
        _load(cfg, "train")


# --------------------------------------------------------------------------- combined datasets


def test_combined_splits_train_on_both_validate_and_test_on_musdb(
        tmp_path: Path, synth_root: Path, ccmixter, caplog: pytest.LogCaptureFixture) -> None:
    cfg = combined(tmp_path, synth_root, ccmixter[0], "data.valid_tracks=[track_002]")
    with caplog.at_level(logging.INFO, logger="waveunet.data"):
        train = _load(cfg, "train")
    assert [(t.dataset, t.name) for t in train] == (
        [("musdb", "track_000"), ("musdb", "track_001")] + [("ccmixter", s) for s in sorted(SONGS)])
    song = next(t for t in train if t.dataset == "ccmixter")
    assert np.array_equal(song.sources[1], ccmixter[1][song.name]["source-02"])
    assert [(t.dataset, t.name) for t in _load(cfg, "valid")] == [("musdb", "track_002")]
    assert [(t.dataset, t.name) for t in _load(cfg, "test")] == [("musdb", "track_000")]
    # One line per split: tracks and duration per dataset, and each one's share of examples.
    (line,) = [r.getMessage() for r in caplog.records if "train" in r.getMessage()]
    assert line == ("data musdb_hq_ccmixter, train: musdb 2 tracks 4.0 s, ccmixter 4 tracks 2.0 s; "
                    "examples drawn per second: musdb 67%, ccmixter 33%")


def test_combined_validation_is_musdbs_official_split(tmp_path: Path, synth_root: Path,
                                                      ccmixter) -> None:
    musdb = shutil.copytree(synth_root, tmp_path / "musdb18hq")
    official = "Actions - One Minute Smile"  # one of MUSDB18's 14 validation tracks
    (musdb / "train" / "track_001").rename(musdb / "train" / official)
    cfg = combined(tmp_path, musdb, ccmixter[0])
    assert [t.name for t in _load(cfg, "valid")] == [official]
    train = _load(cfg, "train")
    assert [t.name for t in train if t.dataset == "musdb"] == ["track_000", "track_002"]
    assert len([t for t in train if t.dataset == "ccmixter"]) == len(SONGS)


def test_musdb_stem_files_with_ccmixter(tmp_path: Path, ccmixter) -> None:
    """The compare_paper preset's datasets: MUSDB18 .stem.mp4 files (AAC) and CCMixter WAVs."""

    musdb = tmp_path / "musdb18"
    write_stem_mp4(musdb / "train" / "Actions - One Minute Smile.stem.mp4", seconds=0.5)
    write_stem_mp4(musdb / "train" / "Some - Song.stem.mp4", seconds=0.5, seed=1)
    cfg = data_cfg(tmp_path, "musdb_ccmixter", f"data.root={musdb}",
                   f"data.ccmixter_root={ccmixter[0]}")
    train = _load(cfg, "train")
    assert [(t.dataset, t.name) for t in train] == (
        [("musdb", "Some - Song")] + [("ccmixter", s) for s in sorted(SONGS)])
    assert [t.name for t in _load(cfg, "valid")] == ["Actions - One Minute Smile"]


def test_valid_tracks_count_draws_training_songs_with_a_fixed_seed(tmp_path: Path,
                                                                   ccmixter) -> None:
    root = ccmixter[0]

    def split(seed: int) -> tuple[list[str], list[str]]:
        cfg = data_cfg(tmp_path, "ccmixter", f"data.root={root}", "data.valid_tracks=2",
                       f"data.valid_seed={seed}")
        return [t.name for t in _load(cfg, "train")], [t.name for t in _load(cfg, "valid")]

    draws = {seed: split(seed) for seed in range(6)}
    for train, valid in draws.values():
        assert len(valid) == 2 and sorted(train + valid) == sorted(SONGS)
    assert split(3) == draws[3]  # the same seed, the same songs
    assert len({tuple(valid) for _, valid in draws.values()}) > 1  # the seed decides
    with pytest.raises(ConfigError, match=r"data\.valid_tracks=4 leaves no training songs"):
        _load(data_cfg(tmp_path, "ccmixter", f"data.root={root}", "data.valid_tracks=4"), "valid")


def _share(examples: TrainingExamples, dataset: str) -> int:
    tracks = examples.tracks
    return sum(tracks[examples.locate(i)[0]].dataset == dataset for i in range(len(examples)))


@pytest.mark.parametrize("overrides", [
    ["data.sampling=per_second"],
    ["data.sampling=per_track"],
    ["data.sampling=per_track", "data.datasets.ccmixter.weight=3"],
    ["data.sampling=per_second", "data.datasets.musdb.weight=0.25"],
])
def test_examples_draw_from_both_datasets_at_the_configured_weights(
        tmp_path: Path, synth_root: Path, ccmixter, overrides: list[str]) -> None:
    cfg = combined(tmp_path, synth_root, ccmixter[0], "data.valid_tracks=[track_002]", *overrides)
    tracks = _load(cfg, "train", rate_hz=22050)
    draws, input_samples = 4000, 1000
    examples = TrainingExamples(tracks, input_samples, draws, seed=0)
    # The expected share of CCMixter, from the lengths and the settings alone.
    weight = {"musdb": 1.0, "ccmixter": 1.0}
    for o in overrides:
        if ".weight=" in o:
            weight[o.split(".")[2]] = float(o.split("=")[1])
    per_track = "data.sampling=per_track" in overrides
    mass = {name: sum(weight[name] * (1 if per_track else t.samples - input_samples + 1)
                      for t in tracks if t.dataset == name) for name in weight}
    p = mass["ccmixter"] / sum(mass.values())
    k = _share(examples, "ccmixter")
    # 4.5 standard deviations: a correct sampler fails this about once in 150,000 seeds.
    assert abs(k - draws * p) <= 4.5 * math.sqrt(draws * p * (1 - p)), (k, draws * p)
    # The batches are those draws: crops of the located tracks, from both datasets.
    loader = make_loader(examples, 16, workers=0, shuffle=False, seed=0)
    batch = next(iter(loader))
    located = [examples.locate(i) for i in range(16)]
    expected = torch.stack([torch.from_numpy(np.array(
        tracks[t].sources[:, :, s:s + input_samples])) for t, s in located])
    assert torch.equal(batch, expected)
    assert {tracks[t].dataset for t, _ in located} == {"musdb", "ccmixter"}


def test_a_change_of_weights_shifts_the_proportion(tmp_path: Path, synth_root: Path,
                                                   ccmixter) -> None:
    shares = {}
    for name, overrides in {"per_second": ["data.sampling=per_second"],
                            "per_track": ["data.sampling=per_track"],
                            "per_track_x3": ["data.sampling=per_track",
                                             "data.datasets.ccmixter.weight=3"]}.items():
        cfg = combined(tmp_path, synth_root, ccmixter[0], "data.valid_tracks=[track_002]",
                       *overrides)
        examples = TrainingExamples(_load(cfg, "train", rate_hz=22050), 1000, 2000, seed=1)
        shares[name] = _share(examples, "ccmixter") / len(examples)
    # 4 songs of 0.5 s against 2 tracks of 2 s: a third of the audio, two thirds of the tracks.
    assert shares["per_second"] < 0.4 < 0.6 < shares["per_track"] < 0.75 < shares["per_track_x3"]


def test_datasets_disagreeing_on_sample_rate_are_refused(tmp_path: Path, synth_root: Path) -> None:
    slow = tmp_path / "cc22k"
    write_ccmixter(slow, rate_hz=22050)
    cfg = combined(tmp_path, synth_root, slow, "data.valid_tracks=[track_002]")
    with pytest.raises(ConfigError, match=r"disagree on sample rate: musdb 44100 Hz .*; "
                                          r"ccmixter 22050 Hz"):
        _load(cfg, "train")
    assert not list((tmp_path / "cache").glob("*/*.npy"))  # refused before decoding anything
    # Validation and test come from MUSDB18 alone: nothing to disagree about there.
    assert [t.name for t in _load(cfg, "valid")] == ["track_002"]


def test_combined_wav_datasets_need_no_ffprobe(tmp_path: Path, synth_root: Path, ccmixter,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """MUSDB18-HQ + CCMixter: the rates are compared from the WAV headers (soundfile)."""
    import stempeg

    def no_ffprobe(path: str) -> None:
        raise FileNotFoundError("ffprobe")

    monkeypatch.setattr(stempeg, "Info", no_ffprobe)
    cfg = combined(tmp_path, synth_root, ccmixter[0], "data.valid_tracks=[track_002]")
    assert {t.dataset for t in _load(cfg, "train")} == {"musdb", "ccmixter"}


def test_datasets_disagreeing_on_sources_are_refused(tmp_path: Path, synth_root: Path,
                                                     ccmixter) -> None:
    cfg = combined(tmp_path, synth_root, ccmixter[0], "data.valid_tracks=[track_002]")
    expected = (r"disagree on sources: the model wants bass, drums, other, vocals; musdb has "
                r"vocals, drums, bass, other \(all of them\); ccmixter has accompaniment, vocals "
                r"\(no bass, drums, other\)")
    for split in ("train", "test"):  # whatever the split: the combination cannot train M6
        with pytest.raises(ConfigError, match=expected):
            _load(cfg, split, sources=FOUR)


def test_unknown_setting_of_a_dataset_entry(tmp_path: Path, synth_root: Path, ccmixter) -> None:
    cfg = combined(tmp_path, synth_root, ccmixter[0], "+data.datasets.ccmixter.fles={}")
    with pytest.raises(ConfigError, match=r"data\.datasets\.ccmixter: unknown setting\(s\) fles"):
        _load(cfg, "train")
    cfg = combined(tmp_path, synth_root, ccmixter[0], "data.datasets.ccmixter.weight=-1")
    with pytest.raises(ConfigError, match=r"data\.datasets\.ccmixter\.weight must be a finite "
                                          r"number >= 0, got -1"):
        _load(cfg, "train")
    cfg = combined(tmp_path, synth_root, ccmixter[0], "data.datasets.ccmixter.weight=nan")
    with pytest.raises(ConfigError, match=r"data\.datasets\.ccmixter\.weight must be a finite "
                                          r"number >= 0, got nan"):
        _load(cfg, "train")


def test_all_weights_zero_is_refused_before_anything_is_decoded(
        tmp_path: Path, synth_root: Path, ccmixter, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = combined(tmp_path, synth_root, ccmixter[0], "data.datasets.musdb.weight=0",
                   "data.datasets.ccmixter.weight=0")
    with pytest.raises(ConfigError, match=r"every training dataset has weight 0 "
                                          r"\(data\.datasets\.musdb\.weight=0, "
                                          r"data\.datasets\.ccmixter\.weight=0\)"):
        _load(cfg, "train")
    assert not (tmp_path / "cache").exists()
    # The only weighted dataset left out (no CCMixter root): refused too, before decoding.
    monkeypatch.delenv("CCMIXTER_PATH", raising=False)
    cfg = combined(tmp_path, synth_root, None, "data.datasets.musdb.weight=0")
    with pytest.raises(ConfigError, match=r"\(data\.datasets\.musdb\.weight=0\)"):
        _load(cfg, "train")
    assert not (tmp_path / "cache").exists()


def test_errors_name_the_top_level_setting_a_preset_maps(tmp_path: Path, synth_root: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for override, message in (
            ("data.valid_tracks=-3", "data.valid_tracks must be >= 0 (a count)"),
            ("data.valid_seed=inf",
             "data.valid_seed must be an integer in [0, 4294967295], got inf"),
            ("data.sampling=foo", "data.sampling: unknown 'foo' (choose from per_second, "
                                  "per_track)")):
        with pytest.raises(ConfigError) as caught:
            _load(combined(tmp_path, synth_root, tmp_path / "nope", override), "train")
        assert str(caught.value).startswith(message), caught.value
    with pytest.raises(DataError, match=re.escape(f"dataset root not found: {tmp_path / 'nope'} "
                                                  "(data.ccmixter_root,")):
        _load(combined(tmp_path, synth_root, tmp_path / "nope"), "train")
    monkeypatch.delenv("MUSDB_HQ_PATH", raising=False)
    with pytest.raises(ConfigError, match=r"^data\.root is not set for the 'musdb' dataset"):
        _load(data_cfg(tmp_path, "musdb_hq_ccmixter", "data.root=null"), "train")


# --------------------------------------------------------------------------- recipes


def test_without_a_ccmixter_root_the_recipe_trains_on_musdb_alone_with_a_warning(
        tmp_path: Path, synth_root: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("CCMIXTER_PATH", raising=False)
    cfg = combined(tmp_path, synth_root, None, "data.valid_tracks=[track_002]")
    with caplog.at_level(logging.INFO, logger="waveunet.data"):
        train = _load(cfg, "train")
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        caplog.clear()
        _load(cfg, "valid")
        assert not [r for r in caplog.records if r.levelno == logging.WARNING]  # no CCMixter there
    assert {t.dataset for t in train} == {"musdb"} and len(train) == 2
    (message,) = warned
    assert "data.ccmixter_root is not set" in message
    assert "trained on MUSDB18 + CCMixter" in message and "data.ccmixter_root=" in message
    # The environment variable is the other way to give the root.
    monkeypatch.setenv("CCMIXTER_PATH", str(tmp_path / "from-env"))
    write_ccmixter(tmp_path / "from-env", seconds=0.2)
    assert len(_load(combined(tmp_path, synth_root, None, "data.valid_tracks=[track_002]"),
                     "train")) == 2 + len(SONGS)


def test_a_voice_model_on_musdb18_alone_is_warned_that_the_paper_added_ccmixter(
        tmp_path: Path, synth_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    def warnings_of(preset: str, sources: list[str], *overrides: str) -> list[str]:
        cfg = data_cfg(tmp_path, preset, *overrides)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="waveunet"):
            _load(cfg, "train", sources=sources)
        return [r.getMessage() for r in caplog.records if "CCMixter" in r.getMessage()]

    musdb_hq = (f"data.root={synth_root}", "data.valid_tracks=[track_002]")
    (message,) = warnings_of("musdb_hq", VOICE, *musdb_hq)
    assert message.startswith("data.format=musdb_hq: the voice model (accompaniment, vocals) "
                              "trains on MUSDB18 alone. The paper's voice models")
    assert "data=musdb_hq_ccmixter data.ccmixter_root=" in message
    assert warnings_of("musdb_hq", FOUR, *musdb_hq) == []  # M6's data: MUSDB18 alone
    synthetic = ("data.tracks=2", "data.test_tracks=1", "data.seconds=1")
    assert warnings_of("synthetic", VOICE, *synthetic) == []
    assert warnings_of("musdb_hq", VOICE, *musdb_hq) == [message]  # every run, not once


def test_presets_say_what_they_train_on() -> None:
    paper = compose("compare", ["experiment=compare_paper"])
    assert paper.model.name == "m5_highsr" and paper.data.name == "musdb_ccmixter"
    assert list(paper.data.datasets) == ["musdb", "ccmixter"]
    assert paper.data.datasets.musdb.format == "musdb"
    assert dict(paper.data.datasets.ccmixter.files) == {
        "mixture": "mix", "accompaniment": "source-01", "vocals": "source-02"}
    hq = compose("train", ["data=musdb_hq_ccmixter"]).data
    assert hq.datasets.musdb.format == "musdb_hq" and hq.datasets.ccmixter.splits == ["train"]
    # data=ccmixter alone validates on a fraction of its songs.
    alone = compose("train", ["data=ccmixter"]).data
    assert alone.valid_fraction == 0.1 and "datasets" not in alone


# --------------------------------------------------------------------------- training end to end


def test_a_combined_config_trains_end_to_end(tmp_path: Path, synth_root: Path, ccmixter,
                                             cli) -> None:
    """`waveunet train experiment=demo data=musdb_hq_ccmixter ...` with a tiny model."""
    from waveunet.model.checkpoint import load_checkpoint

    runs = tmp_path / "runs"
    args = ["train", "experiment=demo", "data=musdb_hq_ccmixter", f"data.root={synth_root}",
            f"data.ccmixter_root={ccmixter[0]}", "data.valid_tracks=[track_002]",
            "data.sampling=per_track", f"data.cache_dir={tmp_path / 'cache'}", "data.workers=0",
            "model.levels=3", "model.initial_filters=6", "model.output_samples=1024",
            "optim.batch_size=4", "trainer.steps_per_epoch=4", "trainer.max_epochs=1",
            "trainer.progress=false", "trainer.validation.audio_examples=0",
            f"runs_root={runs}", "name=combined"]
    done = cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    (log,) = runs.glob("combined/*/train.log")
    output = log.read_text()
    assert "train: musdb 2 tracks 4.0 s, ccmixter 4 tracks 2.0 s; examples drawn per track: " \
           "musdb 33%, ccmixter 67%" in output
    assert "valid: musdb 1 track 2.0 s" in output
    (best,) = runs.glob("combined/*/best.pt")
    saved = load_checkpoint(best)["config"]["data"]
    assert saved["datasets"]["ccmixter"]["root"] == str(ccmixter[0])


# --------------------------------------------------------------------------- evaluate and compare


def _tiny_combined_checkpoint(folder: Path, musdb_root: Path, ccmixter_root: Path) -> Path:
    """A tiny untrained voice model saved as `waveunet train` saves it, its data the combined
    MUSDB18-HQ + CCMixter preset."""
    from omegaconf import OmegaConf

    from waveunet.model.checkpoint import save_checkpoint
    from waveunet.model.network import build_model

    torch.manual_seed(0)
    cfg = compose("train", ["model=tiny", "data=musdb_hq_ccmixter", f"data.root={musdb_root}",
                            f"data.ccmixter_root={ccmixter_root}",
                            f"data.cache_dir={folder / 'cache'}"])
    return save_checkpoint(folder / "best.pt", build_model(cfg.model, cfg.output),
                           config=OmegaConf.to_container(cfg, resolve=True))


def test_a_combined_data_checkpoint_is_evaluated_on_musdbs_test_split(
        tmp_path: Path, synth_root: Path, ccmixter) -> None:
    """The evaluate line printed after training a musdb_hq_ccmixter run works as printed."""
    from waveunet.evaluation.evaluate import compose_evaluate, evaluate

    best = _tiny_combined_checkpoint(tmp_path, synth_root, ccmixter[0])
    summary = evaluate(compose_evaluate([f"checkpoint={best}", f"out_dir={tmp_path / 'r1'}",
                                         "progress=false", "figures=false"]))
    assert [t["name"] for t in summary["tracks"]] == ["track_000"]  # MUSDB18's test track
    meta = summary["meta"]
    assert (meta["data"], meta["data_format"], meta["data_root"]) == (
        "musdb_hq_ccmixter", "musdb_hq", str(synth_root))
    assert meta["sources"] == VOICE
    # The default report folder is named after the data config.
    default = evaluate(compose_evaluate([f"checkpoint={best}", "progress=false",
                                         "figures=false"]))
    assert Path(default["meta"]["out_dir"]).name == "eval-best-test-musdb_hq_ccmixter-sdr"
    # Estimates on disk, scored on the combined preset: its test dataset's stems.
    est = tmp_path / "est" / "track_000"
    est.mkdir(parents=True)
    for source in VOICE:
        shutil.copy(synth_root / "test" / "track_000" / "mixture.wav", est / f"{source}.wav")
    on_disk = evaluate(compose("evaluate", [
        f"estimates={est.parent}", "data=musdb_hq_ccmixter", f"data.root={synth_root}",
        f"data.ccmixter_root={ccmixter[0]}", f"data.cache_dir={tmp_path / 'cache'}",
        f"out_dir={tmp_path / 'r2'}", "progress=false", "figures=false"]))
    assert on_disk["meta"]["sources"] == VOICE and on_disk["meta"]["data_format"] == "musdb_hq"


def test_a_combined_preset_compares_end_to_end(tmp_path: Path, synth_root: Path,
                                               ccmixter) -> None:
    """`waveunet compare` with the paper's data layout (shrunken): trains, then evaluates every
    run on MUSDB18's test split."""
    from waveunet.experiments.compare import compare

    out = tmp_path / "out"
    args = ["experiment=compare_quick", "data=musdb_hq_ccmixter", f"data.root={synth_root}",
            f"data.ccmixter_root={ccmixter[0]}", "data.valid_tracks=[track_002]",
            f"data.cache_dir={tmp_path / 'cache'}", "model.levels=3", "model.initial_filters=6",
            "model.output_samples=1024", "optim.batch_size=4", "trainer.steps_per_epoch=2",
            "trainer.max_epochs=1", "trainer.log_every_steps=1", "compare.seeds=[0]",
            f"compare.out_dir={out}", "compare.figure.passage_seconds=0.5",
            "compare.progress=false", "compare.eval.figures=false"]
    result = compare(compose("compare", args), args)
    assert result["data"] == "musdb_hq_ccmixter"
    assert [(r["mode"], r["status"], r["evaluated"]) for r in result["runs"]] == [
        ("tanh_difference", "finished", True), ("linear_direct", "finished", True)]
    for run in result["runs"]:
        evaluation = json.loads(Path(run["evaluation"]).read_text())
        assert [t["name"] for t in evaluation["tracks"]] == ["track_000"]
        assert evaluation["meta"]["data_format"] == "musdb_hq"
    assert result["waveform"]["track"] == "track_000"
