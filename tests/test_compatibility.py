"""Runs made by earlier versions keep working: a run folder that ``waveunet train`` wrote before
the package was split into layers (commit 7ca5db5: levels 3, 4 filters, 2 epochs of 4 steps on
generated data) still loads, separates and resumes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from waveunet import Separator, load_model
from waveunet.cli import main as cli_main
from waveunet.training.run_log import read_metrics

RUN = Path(__file__).resolve().parent / "fixtures" / "run_0.1.0"


def test_its_checkpoint_loads_and_separates():
    model = load_model(RUN / "best.pt")
    assert (model.config.levels, model.config.initial_filters) == (3, 4)
    separator = Separator.from_checkpoint(RUN / "best.pt", device="cpu", precision="fp32")
    mixture = 0.3 * torch.sin(torch.linspace(0, 2000, 22050)).repeat(2, 1)
    result = separator.separate(mixture, sample_rate_hz=22050)
    for stem in ("accompaniment", "vocals"):
        assert result[stem].shape == mixture.shape and torch.isfinite(result[stem]).all()


def test_the_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    monkeypatch.setenv("WAVEUNET_CACHE", str(tmp_path / "cache"))  # the data made again here
    overrides = [o for o in OmegaConf.load(RUN / ".hydra" / "overrides.yaml")
                 if not o.startswith("runs_root=")]
    assert cli_main(["train", *overrides, "data.workers=0", "trainer.max_epochs=3",
                     "trainer.progress=false", f"runs_root={tmp_path / 'runs'}",
                     f"trainer.resume={run}"]) == 0
    records = read_metrics(run)
    (resume,) = [r for r in records if r["kind"] == "resume"]
    assert resume["step"] == 8 and resume["epoch"] == 2
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 13))
    assert torch.load(run / "last.pt", weights_only=True)["training"]["state"]["epoch"] == 3
    assert not (tmp_path / "runs").exists()  # continued in place, no new run folder


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_its_checkpoints_are_plain_weights_only_dicts(name):
    payload = torch.load(RUN / name, weights_only=True)
    assert payload["config"]["model"]["levels"] == 3
