"""What a finished training run hands the user: TensorBoard logs whose values are the run's own
(hparams equal summary.json, audio equal the tracks and the model's estimates, figures at each
validation, the fixed audio once) and an evaluate command that works exactly as printed."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import soundfile
import torch
from helpers import run_python, training_overrides, waveunet
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from waveunet import data as data_lib
from waveunet.model.checkpoint import load_checkpoint, load_model
from waveunet.separation.inference import Separator
from waveunet.settings.compose import flatten
from waveunet.training.run_log import read_metrics

REPO = Path(__file__).resolve().parents[2]
AUDIO_SECONDS = 1.0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A demo-like tiny run of two epochs (two validations), through the command line."""
    tmp = tmp_path_factory.mktemp("run_outputs")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert waveunet("train", *training_overrides(
            tmp / "cache", "trainer.steps_per_epoch=4", "trainer.max_epochs=2",
            "trainer.validation.audio_examples=1",
            f"trainer.validation.audio_seconds={AUDIO_SECONDS}",
            "trainer.validation.figure_seconds=0.5"), f"runs_root={tmp / 'runs'}") == 0
    (run_dir,) = [p.parent for p in (tmp / "runs").glob("*/*/summary.json")]
    events = EventAccumulator(str(run_dir / "tensorboard"),
                              size_guidance={"audio": 0, "images": 0, "scalars": 0,
                                             "tensors": 0})
    events.Reload()
    records = read_metrics(run_dir)
    return {"dir": run_dir, "stdout": printed.getvalue(), "events": events, "tmp": tmp,
            "summary": json.loads((run_dir / "summary.json").read_text()),
            "valid_steps": [r["step"] for r in records if r["kind"] == "valid"]}


def _decode(event) -> np.ndarray:
    audio, rate = soundfile.read(io.BytesIO(event.encoded_audio_string), dtype="float64")
    assert audio.ndim == 1  # mono
    return audio


def _as_logged(audio: np.ndarray) -> np.ndarray:
    """What TensorBoard audio holds of ``audio``: torch writes int16(x * 32767), truncated;
    soundfile reads int16 / 32768."""
    return np.trunc(audio * 32767) / 32768


LSB = 1.01 / 32768  # one step: the float32 downmix may fall on the other side of one


def test_hparams_are_the_resolved_config_with_the_summarys_validation_numbers(run) -> None:
    events, summary = run["events"], run["summary"]
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    logged = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    config = flatten(load_checkpoint(run["dir"] / "best.pt")["config"])
    assert set(logged) == set(config)
    for key, value in config.items():
        got = logged[key]
        if isinstance(value, int | float):  # bools too: torch's hparams writes them as 0 / 1
            assert got.number_value == pytest.approx(float(value)), key
        elif isinstance(value, str):
            assert got.string_value == value, key
        else:  # lists and nulls as their JSON text
            assert json.loads(got.string_value) == value, key
    final = summary["history"][-1]
    expected = {"hparam/best_valid_loss": summary["best_valid_loss"],
                "hparam/final_valid_loss": final["loss"],
                **{f"hparam/final_valid_sdr_{s}": v for s, v in final["sdr"].items()}}
    assert len(expected) == 4  # accompaniment and vocals
    for tag, value in expected.items():
        (scalar,) = events.Scalars(tag)
        assert scalar.value == pytest.approx(value, rel=1e-6), tag  # float32 in the event file
        assert scalar.step == summary["global_step"]


def test_audio_is_mono_the_fixed_audio_is_logged_once_and_the_values_are_the_runs(run) -> None:
    events, steps = run["events"], run["valid_steps"]
    assert len(steps) == 2
    cfg = load_checkpoint(run["dir"] / "last.pt")["config"]
    model = load_model(run["dir"] / "last.pt")
    (track,) = data_lib.load_split(cfg["data"], "valid", sample_rate_hz=model.sample_rate_hz,
                                   channels=model.config.channels, sources=list(model.sources))
    n = int(AUDIO_SECONDS * model.sample_rate_hz)

    def downmix(audio: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(audio, dtype=np.float64)[:, :n].mean(axis=0), -1, 1)

    tag = f"valid/{track.name}"
    (mixture,) = events.Audio(f"{tag}/mixture")  # once, at the first validation
    assert mixture.step == steps[0]
    np.testing.assert_allclose(_decode(mixture), _as_logged(downmix(track.mixture)), atol=LSB)
    # validation separates in the run's precision (trainer.precision=fp32), not the default auto
    estimates = Separator(model, device="cpu", precision="fp32").separate_tensor(
        torch.tensor(np.asarray(track.mixture))).stems.numpy()
    for i, source in enumerate(model.sources):
        (reference,) = events.Audio(f"{tag}/{source}/reference")
        np.testing.assert_allclose(_decode(reference), _as_logged(downmix(track.sources[i])),
                                   atol=LSB)
        logged = events.Audio(f"{tag}/{source}/estimate")
        assert [e.step for e in logged] == steps  # at every validation
        # the last validation's estimate is last.pt's (saved right after it)
        np.testing.assert_allclose(_decode(logged[-1]), _as_logged(downmix(estimates[i])),
                                   atol=LSB)
        assert not np.allclose(_decode(logged[0]), _decode(logged[-1]))  # the model moved


def test_figures_are_drawn_at_every_validation(run) -> None:
    events, steps = run["events"], run["valid_steps"]
    (track,) = {t.split("/")[1] for t in events.Tags()["images"]}
    for kind in ("waveform", "spectrogram"):
        images = events.Images(f"valid/{track}/{kind}")
        assert [i.step for i in images] == steps
        for image in images:
            pixels = mpimg.imread(io.BytesIO(image.encoded_image_string), format="png")
            assert pixels.shape[0] > 200 and pixels.shape[1] > 400 and pixels.std() > 0.05


def test_the_printed_evaluate_command_works_as_printed(run, cli, monkeypatch, caplog) -> None:
    """The command at the end of training names only the checkpoint: evaluate scores it on the
    dataset it was trained on (the demo's generated one), not on MUSDB18 with no root."""
    (line,) = [x for x in run["stdout"].splitlines() if x.strip().startswith("evaluate:")]
    command = shlex.split(line.split(":", 1)[1])
    assert command[:2] == ["waveunet", "evaluate"] and len(command) == 3
    monkeypatch.chdir(run["tmp"])
    proc = cli(*command[1:], "progress=false")
    assert proc.returncode == 0, proc.stderr
    assert "scoring on the checkpoint's training dataset (synthetic" in caplog.text
    out = run["dir"] / "eval-best-test-synthetic-sdr"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["data"] == "synthetic" and summary["meta"]["tracks"] == 1
    assert summary["meta"]["data_root"] == load_checkpoint(
        run["dir"] / "best.pt")["config"]["data"]["root"]
    assert f"report: {out / 'report.md'}" in proc.stdout
    assert "1 track of synthetic/test" in proc.stdout


def test_nothing_needs_librosa_but_the_spectrogram(tmp_path: Path, cli, monkeypatch) -> None:
    """The GPU machines have no librosa: training and evaluating work without it, with the
    waveform figures and a note instead of the spectrograms; importing the commands does not
    import it."""
    monkeypatch.setitem(sys.modules, "librosa", None)  # `import librosa` fails, as there
    proc = cli("train", *training_overrides(tmp_path / "cache", "trainer.steps_per_epoch=2",
                                            "trainer.validation.audio_examples=1",
                                            "trainer.validation.audio_seconds=1"),
               f"runs_root={tmp_path / 'runs'}")
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/*/summary.json")]
    assert "librosa is not installed" in (run_dir / "train.log").read_text()
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    kinds = {tag.rsplit("/", 1)[1] for tag in events.Tags()["images"]}
    assert kinds == {"waveform"}
    proc = cli("evaluate", f"checkpoint={run_dir / 'best.pt'}", "progress=false",
               f"out_dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert "spectrogram" not in summary["files"] and "waveform" in summary["files"]
    assert "No spectrogram figure: librosa is not installed" in (
        tmp_path / "eval" / "report.md").read_text()
    imports = run_python("import sys, waveunet.training.train, waveunet.evaluation.evaluate, "
                         "waveunet.experiments.compare; print('librosa' in sys.modules)")
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.strip() == "False"
