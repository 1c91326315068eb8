"""waveunet evaluate: checkpoint and estimates-on-disk evaluation, against museval, end to end."""

from __future__ import annotations

import json
import logging
import runpy
import shutil
import sys
from pathlib import Path

import matplotlib.image as mpimg
import museval
import numpy as np
import pytest

from waveunet.audio import read_audio, write_audio
from waveunet.cli import main as cli_main
from waveunet.data.synth import generate_dataset
from waveunet.errors import CheckpointError, ConfigError, DataError
from waveunet.evaluation.evaluate import evaluate
from waveunet.metrics import framewise_sdr
from waveunet.model.checkpoint import save_checkpoint
from waveunet.model.network import build_model
from waveunet.separation.inference import Separator
from waveunet.settings.compose import compose

RATE = 44100
REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# Fixtures: a vocals/accompaniment-only dataset, a generated 4-stem dataset, a tiny checkpoint
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def voice_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder dataset with only vocals, accompaniment and mixture: 2 test tracks of 2.2 s."""
    root = tmp_path_factory.mktemp("voice") / "dataset"
    rng = np.random.default_rng(3)
    n = int(2.2 * RATE)
    t = np.arange(n) / RATE
    for k, name in enumerate(["song_a", "song_b"]):
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t + k)
        vocals = np.stack(
            [0.3 * env * np.sin(2 * np.pi * (330 + 50 * k) * t + c) for c in (0, 0.3)]
        )
        vocals += 0.01 * rng.standard_normal(vocals.shape)
        accompaniment = 0.2 * rng.standard_normal((2, n))
        folder = root / "test" / name
        for stem, audio in (("vocals", vocals), ("accompaniment", accompaniment),
                            ("mixture", vocals + accompaniment)):
            write_audio(folder / f"{stem}.wav", audio.astype(np.float32), RATE, subtype="FLOAT")
    (root / "train").mkdir()
    return root


@pytest.fixture(scope="module")
def synth_test_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated MUSDB18-HQ layout: 2 test tracks of 2 s at 44.1 kHz stereo."""
    return generate_dataset(tmp_path_factory.mktemp("synth_eval") / "dataset", tracks=1,
                            seconds=2.0, seed=5, test_tracks=2)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) tiny tanh-difference voice model at 22.05 kHz, in a run folder."""
    import torch

    torch.manual_seed(0)
    cfg = compose("config", ["model=tiny"])
    model = build_model(cfg.model, cfg.output)
    return save_checkpoint(tmp_path_factory.mktemp("run") / "best.pt", model)


def _voice(root: Path, cache: Path, *overrides: str):
    return compose(
        "evaluate",
        [
            "data=folder",
            f"data.root={root}",
            "data.stems=[vocals,accompaniment]",
            f"data.cache_dir={cache}",
            "progress=false",
            *overrides,
        ],
    )


def _synth(root: Path, cache: Path, *overrides: str):
    return compose("evaluate", ["data=musdb_hq", f"data.root={root}", f"data.cache_dir={cache}",
                                "progress=false", *overrides])


def _mixture_estimates(root: Path, out: Path, sources=("vocals", "accompaniment")) -> Path:
    for track in sorted((root / "test").iterdir()):
        for s in sources:
            (out / track.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(track / "mixture.wav", out / track.name / f"{s}.wav")
    return out


def _museval(root: Path, track: str, sources, estimate_files):
    refs = np.stack([read_audio(root / "test" / track / f"{s}.wav")[0] for s in sources])
    ests = np.stack([read_audio(f)[0] for f in estimate_files])
    return refs, museval.evaluate(
        np.moveaxis(refs, 1, 2), np.moveaxis(ests, 1, 2), win=RATE, hop=RATE
    )


# --------------------------------------------------------------------------------------------
# estimates=DIR
# --------------------------------------------------------------------------------------------


def test_mixture_as_every_estimate_gives_museval_numbers(voice_root: Path, tmp_path: Path) -> None:
    est_dir = _mixture_estimates(voice_root, tmp_path / "est")
    out = tmp_path / "report"
    summary = evaluate(_voice(voice_root, tmp_path / "cache", f"estimates={est_dir}", "metrics=bss",
                              "workers=0", f"out_dir={out}"))
    # Default sources: every dataset source with an estimate file, scored together, by name.
    assert summary["sources"] == ["accompaniment", "vocals"]
    assert summary["metrics"] == ["SDR", "ISR", "SIR", "SAR"]
    assert summary["meta"]["scored_sample_rate_hz"] == RATE
    # The first track against museval itself (the second only through the aggregates).
    entry = summary["tracks"][0]
    name = entry["name"]
    _, expected = _museval(voice_root, name, summary["sources"],
                           [voice_root / "test" / name / "mixture.wav"] * 2)
    for m, exp in zip(("SDR", "ISR", "SIR", "SAR"), expected, strict=True):
        for i, s in enumerate(summary["sources"]):
            got = np.array(entry["metrics"][m][s]["frames"], dtype=float)
            # SDR is the torch path (== museval to 1e-6 dB); the rest is museval itself.
            np.testing.assert_allclose(got, exp[i], atol=1e-6, rtol=0)
    for entry in summary["tracks"]:
        # per-track JSON in museval's own format and layout (<dir>/test/<track>.json)
        doc = json.loads((out / "test" / f"{entry['name']}.json").read_text())
        targets = {t["name"]: t for t in doc["targets"]}
        assert set(targets) == {"vocals", "accompaniment"}
        frames = [f["metrics"]["SIR"] for f in targets["vocals"]["frames"]]
        np.testing.assert_allclose(frames, entry["metrics"]["SIR"]["vocals"]["frames"], atol=1e-4)
    for m in summary["metrics"]:
        for s in summary["sources"]:
            per_track = [np.array(t["metrics"][m][s]["frames"], float) for t in summary["tracks"]]
            allf = np.concatenate(per_track)
            agg = summary["aggregates"][m][s]
            assert agg["pooled_frames"]["median"] == pytest.approx(np.median(allf), abs=1e-9)
            assert agg["pooled_frames"]["mean"] == pytest.approx(allf.mean(), abs=1e-9)
            medians = [np.median(f) for f in per_track]
            assert agg["median_of_track_medians"]["median"] == pytest.approx(
                np.median(medians), abs=1e-9
            )
    # No raw model output for files on disk: clipping comes from the estimates only.
    clip = summary["tracks"][0]["clipping"]["vocals"]
    assert clip["fraction_overshoot"] is None and clip["fraction_clipped"] is not None
    assert "difference" not in summary["tracks"][0]


def test_wrong_length_estimates_are_padded_or_cut_like_museval(
    voice_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    est_dir = tmp_path / "est"
    lengths = {"song_a": int(1.7 * RATE), "song_b": int(2.9 * RATE)}  # short, long
    for track, n in lengths.items():
        for s in ("vocals", "accompaniment"):
            audio, _ = read_audio(voice_root / "test" / track / f"{s}.wav")
            extra = max(0, n - audio.shape[1])
            audio = np.concatenate([audio, np.full((2, extra), 0.1, np.float32)], axis=1)
            write_audio(est_dir / track / f"{s}.wav", 0.9 * audio[:, :n], RATE, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="waveunet.evaluate"):
        summary = evaluate(_voice(voice_root, tmp_path / "cache", f"estimates={est_dir}",
                                  f"out_dir={tmp_path / 'r'}"))
    assert sum("zero-padded or cut" in r.getMessage() for r in caplog.records) == 4
    assert len(summary["meta"]["length_mismatches"]) == 4
    for entry in summary["tracks"]:
        _, expected = _museval(
            voice_root,
            entry["name"],
            ["vocals", "accompaniment"],
            [est_dir / entry["name"] / f"{s}.wav" for s in ("vocals", "accompaniment")],
        )
        got = np.array(
            [entry["metrics"]["SDR"][s]["frames"] for s in ("vocals", "accompaniment")], float
        )
        np.testing.assert_allclose(got, expected[0], atol=1e-6)


def test_estimates_dir_errors_name_the_track_or_file(voice_root: Path, tmp_path: Path) -> None:
    est_dir = _mixture_estimates(voice_root, tmp_path / "est")
    (est_dir / "song_b" / "accompaniment.wav").unlink()
    with pytest.raises(DataError, match=r"song_b.*accompaniment\.wav|accompaniment\.wav.*song_b"):
        evaluate(_voice(voice_root, tmp_path / "cache", f"estimates={est_dir}"))
    shutil.rmtree(est_dir / "song_b")
    with pytest.raises(DataError, match="no folder for track 'song_b'"):
        evaluate(_voice(voice_root, tmp_path / "cache", f"estimates={est_dir}"))
    with pytest.raises(DataError, match="estimates: no such directory"):
        evaluate(_voice(voice_root, tmp_path / "cache", f"estimates={tmp_path / 'nope'}"))
    with pytest.raises(ConfigError, match="not a stem of this dataset"):
        evaluate(_voice(voice_root, tmp_path / "cache", f"estimates={est_dir}", "sources=[drums]"))
    assert not (tmp_path / "evaluations").exists()


# --------------------------------------------------------------------------------------------
# checkpoint=PATH
# --------------------------------------------------------------------------------------------


def test_checkpoint_evaluation_writes_jsons_report_and_figures(
    synth_test_root: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    summary = evaluate(_synth(synth_test_root, tmp_path / "cache", f"checkpoint={tiny_checkpoint}",
                              "metrics=bss", "workers=0", "waveform_track=track_001"))
    out = tiny_checkpoint.parent / "eval-best-test-musdb_hq-bss"
    assert Path(summary["meta"]["out_dir"]) == out.resolve()
    assert json.loads((out / "summary.json").read_text()) == summary
    meta = summary["meta"]
    # A 22.05 kHz model scored at the dataset's 44.1 kHz, and the report says so.
    assert meta["scored_sample_rate_hz"] == RATE and meta["model_sample_rate_hz"] == 22050
    report = (out / "report.md").read_text()
    assert "resampled to the model's 22050 Hz and its stems back to 44100 Hz" in report
    assert "pooled median" in report and "median of track medians" in report
    assert "## SIR (dB)" in report and "## Clipping" in report and "Difference source" in report
    for name in ("sdr_boxplot.png", "waveform_track_001.png", "spectrogram_track_001.png"):
        image = mpimg.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    names = [t["name"] for t in summary["tracks"]]
    assert names == ["track_000", "track_001"]
    for name in names:
        doc = json.loads((out / "test" / f"{name}.json").read_text())
        assert {t["name"] for t in doc["targets"]} == {"accompaniment", "vocals"}

    # Independently: separate with the Separator and score with metrics; same numbers.
    sep = Separator.from_checkpoint(tiny_checkpoint, device="cpu")
    entry = summary["tracks"][1]
    folder = synth_test_root / "test" / "track_001"
    mix, rate = read_audio(folder / "mixture.wav")
    stems = [read_audio(folder / f"{s}.wav")[0] for s in ("vocals", "drums", "bass", "other")]
    refs = np.stack([stems[1] + stems[2] + stems[3], stems[0]])  # accompaniment, vocals
    result = sep.separate(mix, rate)
    assert result.sample_rate_hz == RATE and result.stems.shape == refs.shape
    expected = framewise_sdr(refs, result.stems).numpy()
    got = np.array(
        [entry["metrics"]["SDR"][s]["frames"] for s in ("accompaniment", "vocals")], float
    )
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # museval's SDR (per-track JSON, 1e-5 quantised) agrees with the torch SDR
    doc = json.loads((out / "test" / "track_001.json").read_text())
    voc = next(t for t in doc["targets"] if t["name"] == "vocals")
    np.testing.assert_allclose([f["metrics"]["SDR"] for f in voc["frames"]], got[1], atol=1e-4)

    # Clipping from the raw output and the stems; the difference source's error share.
    clip = entry["clipping"]["vocals"]
    assert clip["activation"] == "tanh" and clip["fraction_overshoot"] is not None
    diff = entry["difference"]
    assert diff["difference_source"] == "vocals" and 0.0 <= diff["explained_share"] <= 1.0
    assert set(summary["clipping"]) == {"accompaniment", "vocals"}

    # The same out_dir again: refused before any work, unless overwrite=true.
    again = ["metrics=sdr", f"out_dir={out}", f"checkpoint={tiny_checkpoint}"]
    with pytest.raises(ConfigError, match="already holds an evaluation.*overwrite=true"):
        evaluate(_synth(synth_test_root, tmp_path / "cache", *again))
    assert json.loads((out / "summary.json").read_text()) == summary
    redo = evaluate(_synth(synth_test_root, tmp_path / "cache", *again, "overwrite=true"))
    assert redo["metrics"] == ["SDR"]


def test_scoring_at_the_model_rate(
    synth_test_root: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    summary = evaluate(_synth(synth_test_root, tmp_path / "cache", f"checkpoint={tiny_checkpoint}",
                              "sample_rate_hz=null", "channels=null", "max_tracks=1",
                              f"out_dir={tmp_path / 'r'}", "sources=[vocals]"))
    assert summary["meta"]["scored_sample_rate_hz"] == 22050
    assert "the model's own rate" in summary["meta"]["scored_rate"]
    assert summary["sources"] == ["vocals"] and len(summary["tracks"]) == 1
    assert len(summary["tracks"][0]["metrics"]["SDR"]["vocals"]["frames"]) == 2  # 2 s, 1-s frames
    assert "difference" not in summary["tracks"][0]  # not attributable with vocals alone


def test_bound_statistics_come_from_the_model_rate(
    synth_test_root: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stems well inside (-1, 1) at the model's 22.05 kHz: resampling them to 44.1 kHz rings past
    the bound (and is clamped there), but that is not the model clipping or saturating."""
    import torch

    from waveunet.separation.inference import SeparationResult

    def square(self, mixture, *, desc=None):
        n = mixture.shape[-1]
        wave = 0.95 * torch.sign(torch.sin(torch.arange(n) * (2 * torch.pi * 441 / 22050)))
        stems = wave.expand(len(self.sources), self.channels, n).clone()
        return SeparationResult(
            stems, stems.clone(), self.sources, self.sample_rate_hz, self.bounds
        )

    monkeypatch.setattr(Separator, "separate_tensor", square)
    mix = torch.from_numpy(read_audio(synth_test_root / "test" / "track_000" / "mixture.wav")[0])
    rung = Separator.from_checkpoint(tiny_checkpoint, device="cpu").separate(mix, RATE)
    assert rung.stems.abs().max() == 1.0  # the resampled stems do reach the bound
    summary = evaluate(_synth(synth_test_root, tmp_path / "cache", f"checkpoint={tiny_checkpoint}",
                              "metrics=sdr", "max_tracks=1", f"out_dir={tmp_path / 'r'}"))
    assert summary["meta"]["scored_sample_rate_hz"] == RATE
    for source in ("accompaniment", "vocals"):
        for clip in (summary["tracks"][0]["clipping"][source], summary["clipping"][source]):
            assert clip["fraction_clipped"] == 0 and clip["clipped_count"] == 0
            assert clip["fraction_saturated"] == 0 and clip["fraction_overshoot"] == 0
            assert clip["overshoot_count"] == 0 and clip.get("overshoot_mean") is None
            assert clip["peak_ratio"] is not None  # reference-based ratios: at the scored rate


def test_overwrite_clears_stale_museval_json_and_figures(
    voice_root: Path, tmp_path: Path
) -> None:
    est = _mixture_estimates(voice_root, tmp_path / "est")
    out = tmp_path / "r"
    (out / "test").mkdir(parents=True)
    (out / "test" / "old_track.json").write_text("{}")
    (out / "waveform_old.png").write_bytes(b"x")
    (out / "notes.txt").write_text("mine")
    base = [f"estimates={est}", f"out_dir={out}", "metrics=sdr", "waveform_track=song_b"]
    with pytest.raises(ConfigError, match="already holds an evaluation.*test.*waveform_old.png"):
        evaluate(_voice(voice_root, tmp_path / "cache", *base))
    evaluate(_voice(voice_root, tmp_path / "cache", *base, "overwrite=true"))
    assert (
        not (out / "test" / "old_track.json").exists()
        and not (out / "waveform_old.png").exists()
    )
    assert (out / "waveform_song_b.png").exists() and (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ([], ConfigError, "exactly one of checkpoint=PATH"),
        (["checkpoint=x.pt", "estimates=y"], ConfigError, "both were set"),
        (["checkpoint=/no/such/best.pt"], CheckpointError, r"checkpoint: /no/such/best\.pt"),
        (["estimates=.", "metrics=fast"], ConfigError, "metrics: unknown 'fast'"),
        (["estimates=.", "split=dev"], ConfigError, "split: unknown 'dev'"),
        (["estimates=.", "max_tracks=0"], ConfigError, "max_tracks"),
        (["estimates=.", "workers=-1"], ConfigError, "workers"),
        (["estimates=.", "device=tpu"], ConfigError, "device"),
        (["estimates=.", "overwrite=maybe"], ConfigError, "overwrite"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, overrides, error, match) -> None:
    with pytest.raises(error, match=match):
        evaluate(
            compose("evaluate", ["data=musdb", f"data.cache_dir={tmp_path}",
                                 "data.root=/nonexistent", *overrides])
        )


def test_checkpoint_setting_errors(
    synth_test_root: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    base = [f"checkpoint={tiny_checkpoint}", f"out_dir={tmp_path / 'r'}"]
    with pytest.raises(ConfigError, match="sources: drums not among the model's sources"):
        evaluate(_synth(synth_test_root, tmp_path / "cache", *base, "sources=[drums]"))
    with pytest.raises(ConfigError, match="waveform_track: 'nope'"):
        evaluate(_synth(synth_test_root, tmp_path / "cache", *base, "waveform_track=nope"))
    with pytest.raises(ConfigError, match="unknown setting 'metric'"):
        compose("evaluate", ["metric=sdr"])


def test_cli_reports_errors_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["evaluate", "estimates=.", "metrics=fast"]) == 2
    assert "waveunet evaluate: error: metrics: unknown 'fast'" in capsys.readouterr().err
    assert cli_main(["evaluate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: waveunet evaluate" in out and "waveform_track" in out


def test_script_help(capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(REPO / "scripts" / "evaluate.py"), "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "scripts" / "evaluate.py"), run_name="__main__")
    assert done.value.code == 0 and "usage: waveunet evaluate" in capsys.readouterr().out
