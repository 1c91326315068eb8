"""evaluate's inputs: which dataset a checkpoint is scored on, estimates in `waveunet separate`'s
layout under MUSDB18-style names, non-finite and silent audio, museval's own loaders, threads
and precision."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from waveunet.audio import read_audio, write_audio
from waveunet.errors import ConfigError, DataError
from waveunet.evaluation import estimates as estimates_lib
from waveunet.evaluation.evaluate import compose_evaluate, evaluate
from waveunet.model.checkpoint import save_checkpoint
from waveunet.model.network import build_model
from waveunet.separation.inference import Separator
from waveunet.settings.compose import compose

RATE = 44100
REPO = Path(__file__).resolve().parents[2]
# MUSDB18 keeps spaces, apostrophes and brackets in its track names.
NAMES = ["Ben's Song - We'll Talk (Live)", "Zeno - Signs [Remix], Part 2"]


def _write_track(folder: Path, vocals: np.ndarray, accompaniment: np.ndarray,
                 overwrite: bool = False) -> None:
    for stem, audio in (("vocals", vocals), ("accompaniment", accompaniment),
                        ("mixture", vocals + accompaniment)):
        write_audio(folder / f"{stem}.wav", audio.astype(np.float32), RATE, subtype="FLOAT",
                    overwrite=overwrite)


@pytest.fixture(scope="module")
def named_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder dataset of 2 test tracks (2.2 s) with MUSDB18-style names; vocals and
    accompaniment."""
    root = tmp_path_factory.mktemp("named") / "dataset"
    rng = np.random.default_rng(7)
    n = int(2.2 * RATE)
    t = np.arange(n) / RATE
    for k, name in enumerate(NAMES):
        vocals = np.stack([0.3 * np.sin(2 * np.pi * (300 + 40 * k) * t + c) for c in (0, 0.4)])
        _write_track(root / "test" / name, vocals + 0.01 * rng.standard_normal((2, n)),
                     0.2 * rng.standard_normal((2, n)))
    (root / "train").mkdir()
    return root


def _data(root: Path, cache: Path) -> dict:
    return {"name": "named", "format": "folder", "root": str(root), "cache_dir": str(cache),
            "stems": ["vocals", "accompaniment"], "valid_tracks": None, "valid_fraction": 0.0,
            "augmentations": [], "workers": 0}


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory: pytest.TempPathFactory, named_root: Path) -> Path:
    """A tiny 44.1 kHz voice model saved as `waveunet train` saves it: with its resolved config,
    whose data is the named dataset."""
    torch.manual_seed(0)
    cfg = compose("config", ["model=tiny", "model.sample_rate_hz=44100"])
    folder = tmp_path_factory.mktemp("trained")
    config = {**OmegaConf.to_container(cfg, resolve=True),
              "data": _data(named_root, folder / "cache")}
    return save_checkpoint(folder / "best.pt", build_model(cfg.model, cfg.output), config=config)


def _folder(root: Path, cache: Path, *overrides: str) -> list[str]:
    return ["data=folder", f"data.root={root}", "data.stems=[vocals,accompaniment]",
            f"data.cache_dir={cache}", "progress=false", "figures=false", *overrides]


# --------------------------------------------------------------------------------------------
# Which dataset
# --------------------------------------------------------------------------------------------


def test_a_checkpoint_is_scored_on_its_own_dataset_unless_one_is_chosen(
        trained_like: Path, named_root: Path, tmp_path: Path) -> None:
    cfg = compose_evaluate([f"checkpoint={trained_like}", f"out_dir={tmp_path / 'r'}",
                            "progress=false", "figures=false"])
    assert OmegaConf.to_container(cfg.data) == _data(named_root, trained_like.parent / "cache")
    summary = evaluate(cfg)
    assert [t["name"] for t in summary["tracks"]] == NAMES
    # figures=false: the numbers and the report, no figure
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.md", "summary.json"]
    assert "No figures were drawn (figures=false)" in (tmp_path / "r" / "report.md").read_text()
    assert summary["meta"]["data"] == "named" and summary["meta"]["data_root"] == str(named_root)
    # data.* settings go on top of the checkpoint's dataset
    copy = tmp_path / "copy"
    shutil.copytree(named_root, copy)
    shutil.rmtree(copy / "test" / NAMES[1])
    cfg = compose_evaluate([f"checkpoint={trained_like}", f"data.root={copy}",
                            f"data.cache_dir={tmp_path / 'cache'}"])
    assert cfg.data.root == str(copy) and cfg.data.name == "named"
    with pytest.raises(ConfigError, match=r"unknown setting 'data\.rot'"):
        compose_evaluate([f"checkpoint={trained_like}", "data.rot=/x"])
    # a preset chosen with data= wins; estimates always need one
    cfg = compose_evaluate([f"checkpoint={trained_like}", "data=musdb_hq", "data.root=/m"])
    assert cfg.data.format == "musdb_hq" and cfg.data.root == "/m"
    with pytest.raises(ConfigError, match="data.root=/x: choose a dataset preset first"):
        compose_evaluate(["estimates=est", "data.root=/x"])
    with pytest.raises(ConfigError, match="data: no dataset chosen"):
        evaluate(compose_evaluate(["estimates=."]))


def test_a_checkpoint_without_a_training_config_asks_for_data(tmp_path: Path) -> None:
    cfg = compose("config", ["model=tiny"])
    bare = save_checkpoint(tmp_path / "bare.pt", build_model(cfg.model, cfg.output))
    with pytest.raises(ConfigError, match=r"records no training dataset.*data=<preset>"):
        compose_evaluate([f"checkpoint={bare}"])


# --------------------------------------------------------------------------------------------
# Estimates in `waveunet separate`'s layout; museval's own loaders
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def separated(trained_like: Path, named_root: Path, tmp_path_factory) -> Path:
    """The checkpoint's stems of every test track in the layout `waveunet separate` writes:
    OUT/<model name>/<track>/<stem>.wav (32-bit float, so nothing is lost)."""
    out = tmp_path_factory.mktemp("separated") / "model-a"
    separator = Separator.from_checkpoint(trained_like, device="cpu")
    for name in NAMES:
        mix, rate = read_audio(named_root / "test" / name / "mixture.wav")
        result = separator.separate(mix, rate)
        for source in result.sources:
            write_audio(out / name / f"{source}.wav", result[source].numpy(), rate,
                        subtype="FLOAT")
    return out


def test_separated_files_score_like_the_checkpoint_in_one_source_order(
        trained_like: Path, named_root: Path, separated: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    from_model = evaluate(compose_evaluate(_folder(named_root, cache, f"checkpoint={trained_like}",
                                                   f"out_dir={tmp_path / 'a'}")))
    from_files = evaluate(compose_evaluate(_folder(named_root, cache, f"estimates={separated}",
                                                   f"out_dir={tmp_path / 'b'}")))
    assert from_model["sources"] == from_files["sources"] == ["accompaniment", "vocals"]
    for a, b in zip(from_model["tracks"], from_files["tracks"], strict=True):
        assert a["name"] == b["name"]
        for s in from_model["sources"]:
            np.testing.assert_allclose(np.array(a["metrics"]["SDR"][s]["frames"], float),
                                       np.array(b["metrics"]["SDR"][s]["frames"], float),
                                       atol=1e-4)
    # the parent folder (separate's -o) instead of the model folder: a hint, not a puzzle
    with pytest.raises(DataError, match=f"did you mean estimates={re.escape(str(separated))}"):
        evaluate(compose_evaluate(_folder(named_root, cache, f"estimates={separated.parent}",
                                          f"out_dir={tmp_path / 'c'}")))


def test_museval_loads_the_per_track_json_with_our_sdrs(
        named_root: Path, separated: Path, tmp_path: Path) -> None:
    import museval

    out = tmp_path / "eval-model-a"
    summary = evaluate(compose_evaluate(_folder(named_root, tmp_path / "cache",
                                                f"estimates={separated}", "metrics=bss",
                                                "workers=0", f"out_dir={out}")))
    assert sorted(p.name for p in (out / "test").iterdir()) == sorted(f"{n}.json" for n in NAMES)
    methods = museval.MethodStore()
    methods.add_eval_dir(out)
    store = museval.EvalStore()
    store.add_eval_dir(out)
    for df in (methods.df, store.df):
        assert sorted(df["track"].unique()) == sorted(NAMES)
        for entry in summary["tracks"]:
            for source in summary["sources"]:
                rows = df[(df.track == entry["name"]) & (df.target == source)
                          & (df.metric == "SDR")].sort_values("time")
                ours = np.array(entry["metrics"]["SDR"][source]["frames"], float)
                assert len(rows) == len(ours) == 2
                # museval's JSON keeps 1e-5 dB steps
                np.testing.assert_allclose(rows["score"].to_numpy(float), ours, atol=1e-5)
    assert set(methods.df["method"]) == {"eval-model-a"}
    medians = methods.agg_frames_tracks_scores()
    for source in summary["sources"]:
        ours = summary["aggregates"]["SDR"][source]["median_of_track_medians"]["median"]
        assert medians["eval-model-a", source, "SDR"] == pytest.approx(ours, abs=1e-5)


# --------------------------------------------------------------------------------------------
# Broken input (issue 14: items 4, 8 and the length warning of 16)
# --------------------------------------------------------------------------------------------


def _estimates_copy(separated: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "est"
    shutil.copytree(separated, copy)
    return copy


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_estimates_are_an_error_naming_the_file_and_first_sample(
        named_root: Path, separated: Path, tmp_path: Path, bad: float) -> None:
    est = _estimates_copy(separated, tmp_path)
    path = est / NAMES[1] / "accompaniment.wav"
    audio, rate = read_audio(path)
    audio[1, 30_000] = bad
    audio[0, 40_000] = bad
    write_audio(path, audio, rate, subtype="FLOAT", overwrite=True)
    base = _folder(named_root, tmp_path / "cache", f"estimates={est}")
    with pytest.raises(DataError, match=(rf"estimates: {re.escape(str(path))} has 2 non-finite "
                                         r"samples .*the first is (inf|nan) at sample 30000, "
                                         "channel 1")):
        evaluate(compose_evaluate([*base, f"out_dir={tmp_path / 'r'}"]))
    assert not (tmp_path / "r").exists()

    summary = evaluate(compose_evaluate([*base, "nonfinite=zero", f"out_dir={tmp_path / 'z'}"]))
    assert summary["meta"]["nonfinite_replaced"] == [
        {"track": NAMES[1], "source": "accompaniment", "file": str(path), "count": 2,
         "first_sample": 30_000, "first_channel": 1}]
    report = (tmp_path / "z" / "report.md").read_text()
    assert "## Non-finite estimates replaced by 0" in report and "(1, 30000)" in report
    # scored exactly as the same file with zeros there
    audio[1, 30_000] = audio[0, 40_000] = 0.0
    write_audio(path, audio, rate, subtype="FLOAT", overwrite=True)
    zeros = evaluate(compose_evaluate([*base, f"out_dir={tmp_path / 'c'}"]))
    assert [t["metrics"] for t in zeros["tracks"]] == [t["metrics"] for t in summary["tracks"]]


def test_bss_refuses_a_silent_reference_before_scoring_anything(
        named_root: Path, separated: Path, tmp_path: Path) -> None:
    """The silent reference is the last track's: nothing may be scored or written first."""
    root = tmp_path / "data"
    shutil.copytree(named_root, root)
    folder = root / "test" / NAMES[1]
    vocals, _ = read_audio(folder / "vocals.wav")
    _write_track(folder, np.zeros_like(vocals), read_audio(folder / "accompaniment.wav")[0],
                 overwrite=True)
    out = tmp_path / "r"
    with pytest.raises(DataError, match=rf"track '{re.escape(NAMES[1])}': the reference of "
                                        "vocals is silent") as error:
        evaluate(compose_evaluate(_folder(root, tmp_path / "cache", f"estimates={separated}",
                                          "metrics=bss", "workers=0", f"out_dir={out}")))
    assert not out.exists()  # no museval JSON of the first track left behind to block a rerun
    assert "Nothing was scored" in str(error.value)


def test_the_length_warning_is_one_line_without_python_source(
        named_root: Path, separated: Path, tmp_path: Path, cli, caplog) -> None:
    est = _estimates_copy(separated, tmp_path)
    path = est / NAMES[0] / "vocals.wav"
    audio, rate = read_audio(path)
    write_audio(path, audio[:, :-1000], rate, subtype="FLOAT", overwrite=True)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        proc = cli("evaluate", *_folder(named_root, tmp_path / "cache", f"estimates={est}",
                                        f"out_dir={tmp_path / 'r'}"))
    assert proc.returncode == 0, proc.stderr
    # logged (`waveunet evaluate: <message>` on the command line's stderr), one line
    lines = [r.getMessage() for r in caplog.records if "zero-padded or cut" in r.getMessage()]
    assert lines == [f"estimates: {path} has 96020 samples, the reference "
                     "97020; it is zero-padded or cut at the end (as museval does)"]
    # a line of its own, not warnings.warn (which prints the file and source line with it)
    assert not [w for w in warned if "zero-padded" in str(w.message)]


# --------------------------------------------------------------------------------------------
# threads= and precision=
# --------------------------------------------------------------------------------------------


def test_threads_apply_while_evaluating_and_are_restored(
        named_root: Path, separated: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    summary = evaluate(compose_evaluate(_folder(named_root, tmp_path / "cache",
                                                f"estimates={separated}", "threads=1",
                                                f"out_dir={tmp_path / 'r'}")))
    assert summary["meta"]["torch_threads"] == 1 and torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="threads must be null or an integer >= 1"):
        evaluate(compose_evaluate(["estimates=.", "threads=0"]))


def test_precision_reaches_the_separator(trained_like: Path, named_root: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    class Recording(Separator):
        def __init__(self, model, *, precision: str = "auto", **kwargs):
            seen.append(precision)
            super().__init__(model, **kwargs)

    monkeypatch.setattr(estimates_lib, "Separator", Recording)
    evaluate(compose_evaluate(_folder(named_root, tmp_path / "cache", "precision=bf16",
                                      f"checkpoint={trained_like}", "max_tracks=1",
                                      f"out_dir={tmp_path / 'r'}")))
    assert seen == ["bf16"]
    with pytest.raises(ConfigError, match="precision: unknown 'fp64'"):
        evaluate(compose_evaluate(["estimates=.", "precision=fp64"]))


def test_plurals_in_the_summary_and_report(named_root: Path, separated: Path,
                                           tmp_path: Path) -> None:
    from waveunet.reporting.evaluation import terminal_summary

    for tracks, word in ((1, "1 track"), (2, "2 tracks")):
        out = tmp_path / f"r{tracks}"
        summary = evaluate(compose_evaluate(_folder(named_root, tmp_path / "cache",
                                                    f"estimates={separated}",
                                                    f"max_tracks={tracks}", f"out_dir={out}")))
        assert terminal_summary(summary).startswith(f"{word} of folder/test, ")
        assert f"\n{word.capitalize()}. pooled_frames:" in (out / "report.md").read_text()
